"""Plan, code and debug agents: an OpenAI-compatible client and an offline default.

base.py          the Agent protocol, AgentRequest/AgentReply, roles
factory.py       choose_agent (auto/offline/openai, and why auto fell back), AgentSetup
settings.py      AgentSettings from flags, environment and stark.toml
openai_agent.py  the OpenAI-compatible client (retries, streaming, preflight)
offline.py       the embedded deterministic agent (every role)
offline_plan.py  its plan policy: which transformation set to try next
transforms.py    its catalogue of semantics-preserving transformations, headers, anchors
render.py        rendering a transformation set into a ModelNew file
failures.py      failure records the offline agent learns from
kernel_fixes.py  targeted fixes of kernels the offline agent did not write
prompts/         the prompt templates and builders every agent is sent
"""
