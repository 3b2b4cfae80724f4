"""Build hook (everything else is in pyproject.toml): the wheel carries the shipped model.

best.pt stays at the repository root, the one canonical copy; building copies it into the wheel as
pokemon_classifier/best.pt, where models.default_weights() finds it after a plain `pip install`.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

MODEL = Path(__file__).resolve().parent / "best.pt"


class BuildPyWithModel(build_py):
    def run(self):
        super().run()
        # Editable installs read best.pt at the repository root already; no 14 MB copy.
        if MODEL.is_file() and not getattr(self, "editable_mode", False):
            self.copy_file(str(MODEL), str(Path(self.build_lib) / "pokemon_classifier" / "best.pt"))


setup(cmdclass={"build_py": BuildPyWithModel})
