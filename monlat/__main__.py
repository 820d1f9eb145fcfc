from monlat.cli import main

raise SystemExit(main())
