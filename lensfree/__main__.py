from lensfree.launch.cli import main

raise SystemExit(main())
