from tokensafe.data.fetch.cli import main

raise SystemExit(main())
