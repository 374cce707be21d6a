"""``enclave-lsp``, the language server: Enclave's completions, explain and edit in other editors.

Public surface: :func:`desktop.lsp.server.build_server` and :func:`desktop.lsp.entry.main` (the
console script). It reuses the desktop client's connection profile and keyring credential
(:mod:`desktop.client`) and its project index, scan rules and context assembly
(:mod:`desktop.project`), and imports no Qt.
"""
