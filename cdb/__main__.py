from cdb.cli import main

raise SystemExit(main())
