from reprodistill.cli import main

raise SystemExit(main())
