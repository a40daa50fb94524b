from lensfree.launch.cli import main

if __name__ == "__main__":  # worker processes spawned by Dask's nanny import this module too
    raise SystemExit(main())
