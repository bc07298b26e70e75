from nailseg.cli import main

raise SystemExit(main())
