"""``python -m desktop.lsp``: the same as the ``enclave-lsp`` command."""

from desktop.lsp.entry import main

raise SystemExit(main())
