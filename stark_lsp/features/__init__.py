"""The server's features, one module each, each with `register(server)`; stark_lsp.app
wires them. A feature depends on stark_lsp.core, the server's state and the support
modules, never on another feature."""
