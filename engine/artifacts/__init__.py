"""What a task leaves behind and tells the world: the task directory and its writers
(`taskdir`), secret redaction (`redact`), the task summary and re-measured figures
(`summary`, `remeasured`), the event stream (`events`), the score-curve figure
(`plotting`) and the `stark debug` report (`debug_report`).

Nothing here imports the search, the agents or the CLI: these are the data the layers
above produce, so the language server can read them without pulling the search in.
"""
