from mmsae.cli import main

main()
