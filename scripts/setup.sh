#!/usr/bin/env bash
# Installs everything moodshift needs into ./.venv (and, as root, the Debian
# packages: FluidSynth and two General MIDI soundfonts for the built-in corpus;
# ffmpeg for the music-library tests; MPD for `playlist --mpd` and its test;
# Chromium for the browser test when MOODSHIFT_BROWSER=1). Safe to re-run.
# A package manager busy with automatic updates is waited for (scripts/apt_lock.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/apt_lock.sh
. scripts/apt_lock.sh

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  need=()
  command -v fluidsynth >/dev/null 2>&1 || need+=(fluidsynth)
  [ -f /usr/share/sounds/sf2/FluidR3_GM.sf2 ] || need+=(fluid-soundfont-gm)
  [ -f /usr/share/sounds/sf2/TimGM6mb.sf2 ] || need+=(timgm6mb-soundfont)
  # ffmpeg: the encoders the music-library tests and `bench embed` make MP3, Ogg,
  # FLAC, M4A and Opus files with (moodshift decodes through PyAV's own FFmpeg).
  command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
  # mpd: the music player daemon `moodshift playlist --mpd` queues into (its test starts one).
  command -v mpd >/dev/null 2>&1 || [ -x /usr/bin/mpd ] || need+=(mpd)
  if [ "${MOODSHIFT_BROWSER:-0}" = 1 ]; then
    [ -x /usr/bin/chromium ] || need+=(chromium chromium-driver)
  fi
  if [ ${#need[@]} -gt 0 ]; then
    echo "setup: apt-get install ${need[*]}"
    wait_for_apt_lock
    # Lock::Timeout covers a lock taken again between the check and apt-get's own start.
    apt_wait=(-o "DPkg::Lock::Timeout=${MOODSHIFT_APT_WAIT:-900}")
    apt-get "${apt_wait[@]}" update -qq
    wait_for_apt_lock
    DEBIAN_FRONTEND=noninteractive apt-get "${apt_wait[@]}" install -y -qq "${need[@]}" >/dev/null
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
