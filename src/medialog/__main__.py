from medialog.cli import main

main()
