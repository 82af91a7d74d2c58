"""Synthesized audio for mambatag training data: espeak-ng speech, fluidsynth music,
generated alarms (beeps, sirens) and generated noise/weather beds.

Everything here is deterministic given a seed, so `build.py` reproduces the same pools.
Outputs are float32 mono numpy arrays at 16 kHz in [-1, 1].
"""
from __future__ import annotations

import os
import struct
import subprocess
import tempfile

import numpy as np

SR = 16000
SOUNDFONT_CANDIDATES = [
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",  # package fluid-soundfont-gm
]


def _read_wav_any(path: str, sr: int = SR) -> np.ndarray:
    """Decode any audio file with ffmpeg to mono float32 at `sr`."""
    out = subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-i", path, "-ac", "1", "-ar", str(sr),
         "-f", "s16le", "-"],
        check=True, capture_output=True).stdout
    return np.frombuffer(out, dtype="<i2").astype(np.float32) / 32768.0


def decode(path: str, sr: int = SR) -> np.ndarray:
    return _read_wav_any(path, sr)


# ---------------------------------------------------------------- speech (espeak-ng)

def espeak(text: str, voice: str = "en", speed: int = 160, pitch: int = 50,
           sr: int = SR) -> np.ndarray:
    with tempfile.TemporaryDirectory() as td:
        wav = os.path.join(td, "s.wav")
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch),
                        "-w", wav, text], check=True, capture_output=True)
        return _read_wav_any(wav, sr)


# A small multilingual text pool (public-domain style sentences written for this project).
SENTENCES = {
    "en": ["The quick brown fox jumps over the lazy dog.",
           "Please leave your message after the tone.",
           "The next train to the city centre departs from platform four.",
           "I think we should meet again tomorrow morning at nine.",
           "Turn left at the second crossing and keep going straight.",
           "Can you hear me now? The connection seems to be very bad today.",
           "Today the weather will be cloudy with a chance of light showers.",
           "She sells sea shells by the sea shore every summer.",
           "Numbers one, two, three, four, five, six, seven, eight, nine, ten.",
           "Welcome to the meeting, let us start with a short introduction."],
    "de": ["Guten Morgen, wie geht es Ihnen heute?",
           "Der Zug nach Berlin hat leider zehn Minuten Verspätung.",
           "Bitte schließen Sie die Türen, der Zug fährt ab."],
    "fr": ["Bonjour, je voudrais réserver une table pour deux personnes.",
           "Le train à destination de Paris partira dans cinq minutes."],
    "es": ["Buenos días, ¿cómo está usted hoy?",
           "El próximo autobús llegará en diez minutos."],
    "it": ["Buongiorno, vorrei un caffè e un cornetto, per favore."],
    "pt": ["Bom dia, o senhor sabe onde fica a estação?"],
    "nl": ["Goedemorgen, de trein naar Amsterdam vertrekt van spoor drie."],
    "pl": ["Dzień dobry, czy mogę prosić o rachunek?"],
    "ru": ["Добрый день, следующая станция центральная."],
    "sv": ["Hej, vad heter du och var bor du?"],
    "cs": ["Dobrý den, kolik stojí jízdenka do Prahy?"],
    "tr": ["Merhaba, bugün hava çok güzel."],
    "hi": ["नमस्ते, आप कैसे हैं?"],
    "zh": ["你好，今天天气很好。"],
    "ja": ["こんにちは、お元気ですか。"],
}
VOICE_VARIANTS = ["", "+m1", "+m3", "+f1", "+f2", "+f4", "+klatt", "+croak", "+whisper"]


def synth_speech(rng: np.random.Generator, n: int) -> list[tuple[np.ndarray, str]]:
    """n espeak-ng utterances in random languages/voices; returns (audio, description)."""
    langs = list(SENTENCES)
    out = []
    for _ in range(n):
        lang = langs[rng.integers(len(langs))] if rng.random() < 0.6 else "en"
        text = SENTENCES[lang][rng.integers(len(SENTENCES[lang]))]
        var = VOICE_VARIANTS[rng.integers(len(VOICE_VARIANTS))]
        if var == "+whisper":
            var = ""  # whisper is hard to call "speech" at low SNR; keep voiced
        speed = int(rng.integers(120, 220))
        pitch = int(rng.integers(20, 80))
        try:
            a = espeak(text, lang + var, speed, pitch)
        except subprocess.CalledProcessError:
            a = espeak(text, lang, speed, pitch)
        out.append((a, f"espeak-ng {lang}{var} s{speed} p{pitch}"))
    return out


# ---------------------------------------------------------------- music (fluidsynth)

def _vlq(v: int) -> bytes:
    b = [v & 0x7F]
    v >>= 7
    while v:
        b.append((v & 0x7F) | 0x80)
        v >>= 7
    return bytes(reversed(b))


def write_midi(path: str, tracks: list[list[tuple[int, int, int, int, int]]],
               programs: list[int], bpm: float, tpq: int = 480) -> None:
    """tracks: per track a list of (start_tick, dur_tick, note, velocity, channel)."""
    chunks = []
    tempo = int(60_000_000 / bpm)
    for ti, notes in enumerate(tracks):
        ch = notes[0][4] if notes else ti
        ev = []
        if ti == 0:
            ev.append((0, b"\xff\x51\x03" + tempo.to_bytes(3, "big")))
        if ch != 9:
            ev.append((0, bytes([0xC0 | ch, programs[ti] & 0x7F])))
        for st, du, note, vel, c in notes:
            ev.append((st, bytes([0x90 | c, note & 0x7F, vel & 0x7F])))
            ev.append((st + du, bytes([0x80 | c, note & 0x7F, 0])))
        ev.sort(key=lambda e: (e[0], e[1][0] & 0xF0 == 0x90))
        data = b""
        last = 0
        for t, msg in ev:
            data += _vlq(t - last) + msg
            last = t
        data += b"\x00\xff\x2f\x00"
        chunks.append(b"MTrk" + struct.pack(">I", len(data)) + data)
    hdr = b"MThd" + struct.pack(">IHHH", 6, 1, len(chunks), tpq)
    with open(path, "wb") as f:
        f.write(hdr + b"".join(chunks))


MAJOR = [0, 2, 4, 5, 7, 9, 11]
MINOR = [0, 2, 3, 5, 7, 8, 10]
# GM programs that sound clearly like music (no sound-effect programs 120-127, no
# helicopter/seashore/telephone which would collide with our classes).
MELODIC_PROGRAMS = list(range(0, 8)) + list(range(8, 16)) + list(range(16, 24)) + \
    list(range(24, 32)) + list(range(40, 48)) + list(range(48, 56)) + \
    list(range(56, 64)) + list(range(64, 80)) + list(range(80, 88)) + list(range(88, 96))
BASS_PROGRAMS = list(range(32, 40))


def random_song(rng: np.random.Generator, seconds: float) -> tuple[list, list[int], float]:
    bpm = float(rng.uniform(70, 160))
    tpq = 480
    beats = int(seconds * bpm / 60) + 2
    scale = MAJOR if rng.random() < 0.5 else MINOR
    root = int(rng.integers(48, 60))
    prog_lead = int(MELODIC_PROGRAMS[rng.integers(len(MELODIC_PROGRAMS))])
    prog_chord = int(MELODIC_PROGRAMS[rng.integers(len(MELODIC_PROGRAMS))])
    prog_bass = int(BASS_PROGRAMS[rng.integers(len(BASS_PROGRAMS))])
    lead, chords, bass, drums = [], [], [], []
    degrees = [0, 3, 4, 0, 5, 3, 4, 4]
    bar = 4 * tpq
    nbars = beats // 4 + 1
    for b in range(nbars):
        deg = degrees[(b + int(rng.integers(2))) % len(degrees)] if rng.random() < 0.3 else degrees[b % len(degrees)]
        triad = [scale[(deg + k) % 7] + 12 * ((deg + k) // 7) for k in (0, 2, 4)]
        st = b * bar
        if rng.random() < 0.85:
            for n in triad:
                chords.append((st, bar - 20, root + 12 + n, int(rng.integers(50, 80)), 1))
        bass.append((st, bar // 2, root - 12 + triad[0], 90, 2))
        bass.append((st + bar // 2, bar // 2, root - 12 + triad[rng.integers(3)], 85, 2))
        t = st
        while t < st + bar:
            du = int(tpq * [0.5, 0.5, 1, 1, 1, 2][rng.integers(6)])
            if rng.random() < 0.85:
                n = scale[int(rng.integers(7))] + 12 * int(rng.integers(1, 3))
                lead.append((t, du, root + n, int(rng.integers(70, 110)), 0))
            t += du
        if rng.random() < 0.7:  # drums on channel 10 (index 9)
            for q in range(8):
                tq = st + q * tpq // 2
                if q % 4 == 0:
                    drums.append((tq, 60, 36, 100, 9))
                if q % 4 == 2:
                    drums.append((tq, 60, 38, 95, 9))
                drums.append((tq, 40, 42, 70, 9))
    tracks = [lead, chords, bass]
    progs = [prog_lead, prog_chord, prog_bass]
    if drums:
        tracks.append(drums)
        progs.append(0)
    return tracks, progs, bpm


def soundfont() -> str:
    for p in SOUNDFONT_CANDIDATES:
        if os.path.exists(p):
            return p
    raise FileNotFoundError("fluid-soundfont-gm not installed (/usr/share/sounds/sf2/FluidR3_GM.sf2)")


def render_midi(mid_path: str, sr: int = SR) -> np.ndarray:
    with tempfile.TemporaryDirectory() as td:
        wav = os.path.join(td, "m.wav")
        subprocess.run(["fluidsynth", "-ni", "-q", "-g", "0.6", "-r", "44100", "-F", wav,
                        soundfont(), mid_path], check=True, capture_output=True)
        return _read_wav_any(wav, sr)


def synth_music(rng: np.random.Generator, seconds: float) -> tuple[np.ndarray, str]:
    tracks, progs, bpm = random_song(rng, seconds)
    with tempfile.TemporaryDirectory() as td:
        mid = os.path.join(td, "s.mid")
        write_midi(mid, tracks, progs, bpm)
        a = render_midi(mid)
    a = a[: int(seconds * SR)]
    return a, f"fluidsynth GM programs {progs} bpm {bpm:.0f}"


# ---------------------------------------------------------------- alarms and noise

def synth_alarm(rng: np.random.Generator, seconds: float) -> tuple[np.ndarray, str]:
    """Beeps, two-tone sirens, wailing sirens, ringing bells, buzzers."""
    n = int(seconds * SR)
    t = np.arange(n) / SR
    kind = ["beep", "twotone", "wail", "ring", "buzzer"][rng.integers(5)]
    if kind == "beep":
        f = rng.uniform(800, 4000)
        period = rng.uniform(0.2, 1.0)
        duty = rng.uniform(0.3, 0.7)
        gate = ((t % period) < duty * period).astype(np.float32)
        x = np.sin(2 * np.pi * f * t) * gate
    elif kind == "twotone":
        f1 = rng.uniform(400, 900)
        f2 = f1 * rng.uniform(1.2, 1.5)
        period = rng.uniform(0.6, 1.6)
        f = np.where((t % period) < period / 2, f1, f2)
        x = np.sign(np.sin(2 * np.pi * np.cumsum(f) / SR)) * 0.5 + np.sin(2 * np.pi * np.cumsum(f) / SR) * 0.5
    elif kind == "wail":
        fc = rng.uniform(600, 1200)
        dev = rng.uniform(200, 600)
        rate = rng.uniform(0.15, 4.0)
        f = fc + dev * np.sin(2 * np.pi * rate * t)
        x = np.sin(2 * np.pi * np.cumsum(f) / SR)
    elif kind == "ring":
        f = rng.uniform(1000, 2500)
        period = rng.uniform(1.5, 3.0)
        trem = (np.sin(2 * np.pi * rng.uniform(15, 25) * t) > 0).astype(np.float32)
        gate = ((t % period) < period * 0.5).astype(np.float32)
        x = (np.sin(2 * np.pi * f * t) + 0.5 * np.sin(2 * np.pi * 2.7 * f * t)) * trem * gate
    else:
        f = rng.uniform(80, 300)
        period = rng.uniform(0.3, 1.2)
        gate = ((t % period) < period * 0.6).astype(np.float32)
        x = np.sign(np.sin(2 * np.pi * f * t)) * gate * 0.6
    x = x.astype(np.float32)
    return x / (np.abs(x).max() + 1e-9) * 0.7, f"synthetic {kind}"


def colored_noise(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """1/f^exponent noise (0 white, 1 pink, 2 brown)."""
    spec = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    f = np.fft.rfftfreq(n, 1 / SR)
    f[0] = f[1]
    spec /= f ** (exponent / 2)
    x = np.fft.irfft(spec, n).astype(np.float32)
    return x / (np.abs(x).max() + 1e-9)


def synth_weather(rng: np.random.Generator, seconds: float) -> tuple[np.ndarray, str]:
    """Noise-based rain (dense random droplets over pink noise) or wind (slowly modulated
    low-passed noise)."""
    n = int(seconds * SR)
    if rng.random() < 0.5:
        bed = colored_noise(rng, n, 0.7) * 0.3
        drops = np.zeros(n, np.float32)
        k = int(seconds * rng.uniform(200, 2000))
        pos = rng.integers(0, n - 200, k)
        env = np.exp(-np.arange(200) / rng.uniform(10, 40)).astype(np.float32)
        for p in pos:
            drops[p:p + 200] += env * rng.uniform(-1, 1) * rng.uniform(0.1, 1)
        x = bed + drops / (np.abs(drops).max() + 1e-9)
        kind = "rain"
    else:
        x = colored_noise(rng, n, 1.8)
        t = np.arange(n) / SR
        mod = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.05, 0.3) * t + rng.uniform(0, 6)) * \
            (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.1, 0.7) * t))
        x = x * mod.astype(np.float32)
        kind = "wind"
    x = x.astype(np.float32)
    return x / (np.abs(x).max() + 1e-9) * 0.7, f"synthetic {kind}"


# ---------------------------------------------------------------- impacts and tools (physical-ish)

def _modal_hit(rng: np.random.Generator, n: int, material: str) -> np.ndarray:
    """One struck object: a short broadband contact burst plus damped resonant modes.
    material: wood (low, fast decay), metal (high, inharmonic, long ring), glass (very high,
    bright, shattering tail of small fragments), thud (low body, very fast)."""
    t = np.arange(n) / SR
    if material == "wood":
        f0, nm, dec, ratio = rng.uniform(150, 700), 4, rng.uniform(0.02, 0.08), [1.0, 2.6, 4.1, 5.9]
    elif material == "metal":
        f0, nm, dec, ratio = rng.uniform(300, 2500), 6, rng.uniform(0.15, 0.8), [1.0, 2.76, 5.4, 8.93, 13.3, 17.8]
    elif material == "glass":
        f0, nm, dec, ratio = rng.uniform(1500, 4500), 5, rng.uniform(0.05, 0.2), [1.0, 1.6, 2.3, 3.1, 4.4]
    else:  # thud
        f0, nm, dec, ratio = rng.uniform(50, 180), 3, rng.uniform(0.03, 0.12), [1.0, 1.9, 3.2]
    x = np.zeros(n, np.float64)
    for k in range(nm):
        fk = f0 * ratio[k] * rng.uniform(0.97, 1.03)
        if fk > 7800:
            continue
        x += rng.uniform(0.2, 1.0) / (k + 1) ** 0.5 * np.sin(2 * np.pi * fk * t + rng.uniform(0, 6)) * \
            np.exp(-t / (dec * rng.uniform(0.5, 1.2) / (1 + 0.3 * k)))
    burst_len = int(rng.uniform(0.002, 0.02) * SR)
    burst = colored_noise(rng, max(burst_len, 8), rng.uniform(0, 1.5))[:n] * np.exp(-np.arange(min(burst_len, n)) / max(1, burst_len / 4))
    x[:len(burst)] += rng.uniform(0.5, 2.0) * burst
    if material == "glass" and rng.random() < 0.8:   # fragments
        for _ in range(int(rng.integers(5, 40))):
            p = int(rng.integers(0, max(1, n - 400)))
            fr = rng.uniform(2500, 7500)
            m = min(400, n - p)
            tt = np.arange(m) / SR
            x[p:p + m] += rng.uniform(0.05, 0.4) * np.sin(2 * np.pi * fr * tt) * np.exp(-tt / rng.uniform(0.003, 0.02))
    return (x / (np.abs(x).max() + 1e-9)).astype(np.float32)


def synth_impact(rng: np.random.Generator, seconds: float) -> tuple[np.ndarray, str]:
    """Knocks (2-4 quick wooden hits), slams/thuds, metal clangs, glass breaking, crashes
    (several overlapping hits with a noise tail) and explosions (low boom + long rumble)."""
    n = int(seconds * SR)
    x = np.zeros(n, np.float32)
    kind = ["knock", "slam", "clang", "shatter", "crash", "explosion"][rng.integers(6)]
    if kind == "knock":
        p = int(rng.uniform(0.05, 0.3) * SR)
        for _ in range(int(rng.integers(2, 5))):
            h = _modal_hit(rng, min(int(0.3 * SR), n - p), "wood")
            x[p:p + len(h)] += h * rng.uniform(0.6, 1.0)
            p += int(rng.uniform(0.12, 0.3) * SR)
            if p >= n - 100:
                break
    elif kind in ("slam", "clang", "shatter"):
        mat = {"slam": "thud", "clang": "metal", "shatter": "glass"}[kind]
        p = int(rng.uniform(0.05, 0.3) * SR)
        h = _modal_hit(rng, n - p, mat)
        x[p:] += h
        if kind == "slam":
            x[p:] += 0.5 * _modal_hit(rng, n - p, "wood")
    elif kind == "crash":
        p0 = int(rng.uniform(0.05, 0.3) * SR)
        for _ in range(int(rng.integers(4, 12))):
            p = p0 + int(rng.uniform(0, 0.6) * SR)
            if p >= n - 100:
                continue
            h = _modal_hit(rng, n - p, ["metal", "glass", "wood", "thud"][rng.integers(4)])
            x[p:] += h * rng.uniform(0.3, 1.0)
        tail = colored_noise(rng, n - p0, rng.uniform(0.5, 1.5)) * np.exp(-np.arange(n - p0) / (rng.uniform(0.2, 0.6) * SR))
        x[p0:] += 0.5 * tail
    else:
        p = int(rng.uniform(0.05, 0.3) * SR)
        m = n - p
        tt = np.arange(m) / SR
        boom = colored_noise(rng, m, 2.0) * np.exp(-tt / rng.uniform(0.3, 1.2))
        crack = colored_noise(rng, m, 0.3) * np.exp(-tt / rng.uniform(0.01, 0.05))
        x[p:] += boom + rng.uniform(0.3, 1.0) * crack
    x = x.astype(np.float32)
    return x / (np.abs(x).max() + 1e-9) * 0.7, f"synthetic {kind}"


def synth_tools(rng: np.random.Generator, seconds: float) -> tuple[np.ndarray, str]:
    """Hammering (periodic strikes on wood/metal), sawing (band-passed noise strokes), drilling /
    grinding / power tools (motor harmonics + noise, with load changes), sanding/filing (fast
    rasping noise)."""
    n = int(seconds * SR)
    t = np.arange(n) / SR
    kind = ["hammer", "saw", "drill", "grinder", "rasp"][rng.integers(5)]
    x = np.zeros(n, np.float64)
    if kind == "hammer":
        rate = rng.uniform(1.2, 4.0)
        mat = "metal" if rng.random() < 0.5 else "wood"
        p = int(rng.uniform(0.05, 0.3) * SR)
        while p < n - 200:
            h = _modal_hit(rng, min(int(0.6 * SR), n - p), mat)
            x[p:p + len(h)] += h * rng.uniform(0.7, 1.0)
            p += int(SR / rate * rng.uniform(0.85, 1.15))
    elif kind in ("saw", "rasp"):
        rate = rng.uniform(1.0, 3.0) if kind == "saw" else rng.uniform(4.0, 9.0)
        noise = colored_noise(rng, n, rng.uniform(0.0, 0.8))
        X = np.fft.rfft(noise)
        f = np.fft.rfftfreq(n, 1 / SR)
        fc = rng.uniform(1500, 5000) if kind == "saw" else rng.uniform(3000, 6500)
        bw = fc * rng.uniform(0.3, 1.0)
        X *= np.exp(-0.5 * ((f - fc) / bw) ** 2)
        band = np.fft.irfft(X, n)
        stroke = np.abs(np.sin(np.pi * rate * t)) ** rng.uniform(0.5, 2.0)
        teeth = 1 + 0.6 * np.sign(np.sin(2 * np.pi * rng.uniform(60, 250) * t)) if kind == "saw" else 1.0
        x = band * stroke * teeth
    else:
        f0 = rng.uniform(90, 400) if kind == "drill" else rng.uniform(150, 600)
        # load changes: pitch sags and recovers
        sag = 1 - rng.uniform(0.05, 0.3) * (np.sin(2 * np.pi * rng.uniform(0.1, 0.8) * t) > rng.uniform(-0.5, 0.5))
        sag = np.convolve(sag, np.ones(800) / 800, mode="same")
        ph = 2 * np.pi * np.cumsum(f0 * sag) / SR
        for k in range(1, 12):
            if f0 * k > 7800:
                break
            x += rng.uniform(0.2, 1.0) / k ** rng.uniform(0.5, 1.2) * np.sin(k * ph + rng.uniform(0, 6))
        x += rng.uniform(0.2, 1.0 if kind == "grinder" else 0.5) * colored_noise(rng, n, rng.uniform(0, 1))
        if kind == "grinder":
            x += 0.4 * np.sin(2 * np.pi * rng.uniform(3000, 7000) * t) * (1 + np.sin(2 * np.pi * 7 * t))
        # spin up / spin down or on/off bursts
        env = np.ones(n)
        if rng.random() < 0.6:
            on = int(rng.uniform(0.1, 0.4) * SR)
            env[:on] = np.linspace(0, 1, on)
            off = int(rng.uniform(0.2, 0.6) * SR)
            env[n - off:] = np.linspace(1, 0, off)
        x *= env
    x = x.astype(np.float32)
    return x / (np.abs(x).max() + 1e-9) * 0.7, f"synthetic {kind}"
