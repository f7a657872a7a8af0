"""Plan, code and debug agents: an OpenAI-compatible client and an offline default."""
