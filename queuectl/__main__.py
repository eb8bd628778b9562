from queuectl.cli.main import main

raise SystemExit(main())
