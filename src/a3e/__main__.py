from a3e.cli import main

raise SystemExit(main())
