"""Test doubles shared across the test suite (see openai_server.py for how to script one)."""

from tests.fakes.openai_server import (
    FakeOpenAIServer,
    FakeReply,
    RecordedRequest,
    fake_openai,
)

__all__ = ["FakeOpenAIServer", "FakeReply", "RecordedRequest", "fake_openai"]
