from mgkit.cli import main

main()
