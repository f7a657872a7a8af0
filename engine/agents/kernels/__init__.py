"""The embedded kernel writer: graph capture (`capture`), operator classes and fusion groups
(`fusion`), schedules (`schedule`), code generation for C++ (`cpp_codegen`), Triton
(`triton_codegen`) and CUDA C (`cuda_codegen`), and the `ModelNew` module that puts them
together (`module`). The offline agent's plan/code/debug roles drive it (`engine.agents.offline`).

Everything here except `capture_worker` works on the JSON-able graph of `ir` and imports no
torch: the capture itself runs in a child process.
"""
