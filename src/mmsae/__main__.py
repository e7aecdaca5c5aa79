from mmsae.cli import app

app()
