import sys
from pathlib import Path

# tests/index_fixture.py builds tiny feature indexes shared by the viz and explain tests
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
