//! cpal input: device listing, lookup by name or index, and a stream whose callback only
//! pushes `f32` samples into a lock-free ring.
//!
//! The callback converts the device's native sample format to `f32` through a fixed stack
//! buffer and `push_slice`s it into a `ringbuf` producer; what does not fit is counted as
//! overflow. It then `unpark`s the conditioning thread (a futex wake: no lock, no allocation,
//! never blocks). Errors from the backend only set atomic flags the conditioning thread reads.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::Thread;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{FromSample, SampleFormat, SizedSample};
use ringbuf::traits::{Consumer, Observer, Producer, Split};
use ringbuf::HeapRb;

use super::SourceStats;
pub use super::{DeviceInfo, StreamFlags};

fn device_id(d: &cpal::Device) -> String {
    d.id()
        .map(|i| i.id().to_string())
        .unwrap_or_else(|_| d.to_string())
}

fn device_name(d: &cpal::Device) -> String {
    d.description()
        .map(|x| x.name().to_string())
        .unwrap_or_else(|_| device_id(d))
}

fn input_devices() -> Result<Vec<cpal::Device>> {
    let host = cpal::default_host();
    Ok(host
        .input_devices()
        .map_err(|e| anyhow!("cannot list input devices: {e}"))?
        .collect())
}

/// Every input device with its default and supported configurations.
pub fn list_devices() -> Result<Vec<DeviceInfo>> {
    let default_id = cpal::default_host()
        .default_input_device()
        .map(|d| device_id(&d));
    let mut out = Vec::new();
    for (index, d) in input_devices()?.into_iter().enumerate() {
        let id = device_id(&d);
        let def = d.default_input_config().ok();
        let mut formats: Vec<String> = Vec::new();
        let mut rates: Option<(u32, u32)> = None;
        let mut max_channels: Option<u16> = None;
        if let Ok(cfgs) = d.supported_input_configs() {
            for c in cfgs {
                let f = c.sample_format().to_string();
                if !formats.contains(&f) {
                    formats.push(f);
                }
                rates = Some(match rates {
                    None => (c.min_sample_rate(), c.max_sample_rate()),
                    Some((a, b)) => (a.min(c.min_sample_rate()), b.max(c.max_sample_rate())),
                });
                max_channels = Some(max_channels.unwrap_or(0).max(c.channels()));
            }
        }
        out.push(DeviceInfo {
            index,
            name: device_name(&d),
            default: default_id.as_deref() == Some(id.as_str()),
            id,
            default_rate: def.as_ref().map(|c| c.sample_rate()),
            default_channels: def.as_ref().map(|c| c.channels()),
            default_format: def.as_ref().map(|c| c.sample_format().to_string()),
            formats,
            rates,
            max_channels,
        });
    }
    Ok(out)
}

/// Finds an input device: `default`, an index from `mambatag devices`, an ALSA PCM id
/// (`pulse`, `hw:…`), or a (case-insensitive) device name.
pub fn find_device(spec: &str) -> Result<cpal::Device> {
    let spec = spec.trim();
    let host = cpal::default_host();
    if spec.is_empty() || spec == "default" {
        return host
            .default_input_device()
            .ok_or_else(|| anyhow!("no default input device"));
    }
    let devices = input_devices()?;
    if let Ok(i) = spec.parse::<usize>() {
        let n = devices.len();
        return devices
            .into_iter()
            .nth(i)
            .ok_or_else(|| anyhow!("no input device with index {i} ({n} devices)"));
    }
    let mut by_name = None;
    for d in devices {
        if device_id(&d) == spec {
            return Ok(d);
        }
        if by_name.is_none() && device_name(&d).eq_ignore_ascii_case(spec) {
            by_name = Some(d);
        }
    }
    by_name.ok_or_else(|| anyhow!("no input device named `{spec}` (see `mambatag devices`)"))
}

/// A running input stream and the consumer end of its ring.
pub struct Capture {
    // Field order matters: the stream (and its callback holding the producer) drops first.
    _stream: cpal::Stream,
    pub cons: ringbuf::HeapCons<f32>,
    pub rate: u32,
    pub channels: usize,
    pub format: SampleFormat,
    pub flags: Arc<StreamFlags>,
    pub description: String,
}

/// Ring capacity in seconds of audio.
const RING_SECONDS: u32 = 2;

impl Capture {
    /// Opens `spec` with its default input config and starts it. `wake` is unparked after
    /// every callback; `buffer_frames` asks for a device buffer of that many frames (falls
    /// back to the device default if refused).
    pub fn open(
        spec: &str,
        buffer_frames: Option<u32>,
        stats: Arc<SourceStats>,
        wake: Thread,
    ) -> Result<Self> {
        let device = find_device(spec)?;
        let name = device_name(&device);
        let id = device_id(&device);
        let def = device
            .default_input_config()
            .with_context(|| format!("input device `{id}` has no default input config"))?;
        let rate = def.sample_rate();
        let channels = def.channels() as usize;
        let format = def.sample_format();
        let mut last_err = None;
        let attempts: Vec<cpal::BufferSize> = match buffer_frames {
            Some(n) => vec![cpal::BufferSize::Fixed(n), cpal::BufferSize::Default],
            None => vec![cpal::BufferSize::Default],
        };
        for bs in attempts {
            let config = cpal::StreamConfig {
                channels: def.channels(),
                sample_rate: rate,
                buffer_size: bs,
            };
            let rb = HeapRb::<f32>::new((rate * RING_SECONDS) as usize * channels.max(1));
            let (prod, cons) = rb.split();
            let flags = Arc::new(StreamFlags::default());
            match build(
                &device,
                config,
                format,
                prod,
                stats.clone(),
                flags.clone(),
                wake.clone(),
            ) {
                Ok(stream) => {
                    stream
                        .play()
                        .map_err(|e| anyhow!("cannot start input device `{id}`: {e}"))?;
                    let period = stream
                        .buffer_size()
                        .map(|n| format!(", buffer {n} frames"))
                        .unwrap_or_default();
                    return Ok(Self {
                        _stream: stream,
                        cons,
                        rate,
                        channels,
                        format,
                        flags,
                        description: format!(
                            "{name} ({id}), {rate} Hz × {channels} {format}{period}"
                        ),
                    });
                }
                Err(e) => last_err = Some(e),
            }
        }
        bail!(
            "cannot open input device `{id}`: {}",
            last_err.map(|e| e.to_string()).unwrap_or_default()
        )
    }

    /// Pops everything available into `buf` (whole frames only); returns samples popped.
    pub fn drain(&mut self, buf: &mut Vec<f32>) -> usize {
        let ch = self.channels.max(1);
        let avail = self.cons.occupied_len() / ch * ch;
        if avail == 0 {
            return 0;
        }
        let start = buf.len();
        buf.resize(start + avail, 0.0);
        let n = self.cons.pop_slice(&mut buf[start..]);
        buf.truncate(start + n);
        n
    }
}

/// Samples converted per stack buffer in the callback.
const CHUNK: usize = 512;

fn build(
    device: &cpal::Device,
    config: cpal::StreamConfig,
    format: SampleFormat,
    prod: ringbuf::HeapProd<f32>,
    stats: Arc<SourceStats>,
    flags: Arc<StreamFlags>,
    wake: Thread,
) -> Result<cpal::Stream> {
    macro_rules! typed {
        ($t:ty) => {
            build_typed::<$t>(device, config, prod, stats, flags, wake)
        };
    }
    match format {
        SampleFormat::I8 => typed!(i8),
        SampleFormat::I16 => typed!(i16),
        SampleFormat::I24 => typed!(cpal::I24),
        SampleFormat::I32 => typed!(i32),
        SampleFormat::I64 => typed!(i64),
        SampleFormat::U8 => typed!(u8),
        SampleFormat::U16 => typed!(u16),
        SampleFormat::U24 => typed!(cpal::U24),
        SampleFormat::U32 => typed!(u32),
        SampleFormat::U64 => typed!(u64),
        SampleFormat::F32 => typed!(f32),
        SampleFormat::F64 => typed!(f64),
        other => bail!("unsupported sample format {other}"),
    }
}

/// The body of the audio callback: converts `data` to `f32` through a stack buffer and pushes
/// it into the ring; what does not fit is counted in `overflow_samples`. No locks, no
/// allocation, no blocking.
pub fn push_converted<T>(data: &[T], prod: &mut impl Producer<Item = f32>, stats: &SourceStats)
where
    T: SizedSample,
    f32: FromSample<T>,
{
    let mut buf = [0.0f32; CHUNK];
    let mut lost = 0u64;
    for piece in data.chunks(CHUNK) {
        for (o, &s) in buf.iter_mut().zip(piece) {
            *o = <f32 as FromSample<T>>::from_sample_(s);
        }
        let pushed = prod.push_slice(&buf[..piece.len()]);
        lost += (piece.len() - pushed) as u64;
    }
    if lost > 0 {
        stats.overflow_samples.fetch_add(lost, Ordering::Relaxed);
    }
}

fn build_typed<T>(
    device: &cpal::Device,
    config: cpal::StreamConfig,
    mut prod: ringbuf::HeapProd<f32>,
    stats: Arc<SourceStats>,
    flags: Arc<StreamFlags>,
    wake: Thread,
) -> Result<cpal::Stream>
where
    T: SizedSample + Send + 'static,
    f32: FromSample<T>,
{
    let err_flags = flags.clone();
    let err_stats = stats.clone();
    let err_wake = wake.clone();
    // The audio callback: convert through a stack buffer, push, count what did not fit, wake
    // the conditioning thread. No locks, no allocation, no blocking.
    let data_cb = move |data: &[T], _: &cpal::InputCallbackInfo| {
        push_converted(data, &mut prod, &stats);
        flags.callbacks.fetch_add(1, Ordering::Relaxed);
        wake.unpark();
    };
    let err_cb = move |e: cpal::Error| {
        err_stats.device_errors.fetch_add(1, Ordering::Relaxed);
        match e.kind() {
            cpal::ErrorKind::DeviceNotAvailable
            | cpal::ErrorKind::StreamInvalidated
            | cpal::ErrorKind::HostUnavailable
            | cpal::ErrorKind::BackendError => {
                err_flags.lost.store(true, Ordering::Relaxed);
                err_wake.unpark();
            }
            _ => {}
        }
    };
    device
        .build_input_stream::<T, _, _>(config, data_cb, err_cb, Some(Duration::from_secs(2)))
        .map_err(|e| anyhow!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_converts_and_counts_overflow() {
        let stats = SourceStats::default();
        let (mut prod, mut cons) = HeapRb::<f32>::new(1000).split();
        let data: Vec<i16> = (0..1500)
            .map(|i| if i % 2 == 0 { 16384 } else { -32768 })
            .collect();
        push_converted(&data, &mut prod, &stats);
        assert_eq!(stats.overflow_samples.load(Ordering::Relaxed), 500);
        let mut out = vec![0.0f32; 1000];
        assert_eq!(cons.pop_slice(&mut out), 1000);
        assert_eq!(out[0], 0.5);
        assert_eq!(out[1], -1.0);
        // After draining, nothing more is lost.
        push_converted(&data[..800], &mut prod, &stats);
        assert_eq!(stats.overflow_samples.load(Ordering::Relaxed), 500);
    }
}
