from ttsearch.cli.app import main

raise SystemExit(main())
