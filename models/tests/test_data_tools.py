"""models/data/build.py checks, before any work, that the machine has the programs and the GM
soundfont each step needs, and names what is missing and the script that installs it."""
import os
import subprocess
import sys

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(REPO, "models", "data"))
import build  # noqa: E402


def test_missing_tools_per_step(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda t: None)
    monkeypatch.setattr(build.synth, "SOUNDFONT_CANDIDATES", ["/nonexistent/FluidR3_GM.sf2"])
    assert build.missing_tools("fetch") == ["apt-get", "dpkg-deb"]
    assert build.missing_tools("bundle", no_synth=True) == ["ffmpeg"]
    bundle = build.missing_tools("bundle")
    assert bundle[:3] == ["ffmpeg", "espeak-ng", "fluidsynth"] and "fluid-soundfont-gm" in bundle[3]
    assert build.missing_tools("all")[:2] == ["apt-get", "dpkg-deb"]
    monkeypatch.setattr("shutil.which", lambda t: "/usr/bin/" + t)
    monkeypatch.setattr(build.synth, "SOUNDFONT_CANDIDATES", [__file__])
    assert build.missing_tools("all") == []


def test_build_refuses_to_start_without_its_tools():
    """Run for real with an empty PATH (only python itself is called by absolute path): the
    command fails at once with one line naming the tools and scripts/data-deps.sh."""
    r = subprocess.run([sys.executable, os.path.join(REPO, "models", "data", "build.py"), "bundle"],
                       env={"PATH": "/nonexistent", "HOME": os.environ.get("HOME", "/tmp")},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "missing ffmpeg" in r.stderr and "scripts/data-deps.sh" in r.stderr
