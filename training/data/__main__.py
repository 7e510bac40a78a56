from training.data.cli import main

raise SystemExit(main())
