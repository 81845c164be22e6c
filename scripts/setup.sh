#!/usr/bin/env bash
# Installs everything moodshift needs into ./.venv (and, as root, the Debian
# packages: FluidSynth and two General MIDI soundfonts for the built-in corpus;
# ffmpeg for the music-library tests; Chromium for the browser test when MOODSHIFT_BROWSER=1). Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  need=()
  command -v fluidsynth >/dev/null 2>&1 || need+=(fluidsynth)
  [ -f /usr/share/sounds/sf2/FluidR3_GM.sf2 ] || need+=(fluid-soundfont-gm)
  [ -f /usr/share/sounds/sf2/TimGM6mb.sf2 ] || need+=(timgm6mb-soundfont)
  # ffmpeg: the encoders the music-library tests and `bench embed` make MP3, Ogg,
  # FLAC, M4A and Opus files with (moodshift decodes through PyAV's own FFmpeg).
  command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
  if [ "${MOODSHIFT_BROWSER:-0}" = 1 ]; then
    [ -x /usr/bin/chromium ] || need+=(chromium chromium-driver)
  fi
  if [ ${#need[@]} -gt 0 ]; then
    echo "setup: apt-get install ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
else
  command -v fluidsynth >/dev/null 2>&1 || echo "setup: not root; no FluidSynth: the corpus step will say how to install it" >&2
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
PIP=".venv/bin/pip"
$PIP install -q --upgrade pip
# The CPU wheel of this exact torch lies on the project's machines; install it
# first so nothing later pulls a CUDA build.
$PIP install -q torch==2.13.0
# MOODSHIFT_EXTRAS: optional extras (the test run adds "ray" for the Ray engine tests).
$PIP install -q -e ".[${MOODSHIFT_EXTRAS:-dev}]"
echo "setup: done ($(.venv/bin/python -c 'import moodshift; print("moodshift", moodshift.__version__)'))"
