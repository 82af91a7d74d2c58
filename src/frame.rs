//! Cutting a sample stream into hops.
//!
//! The model takes exactly `hop` samples per step. [`Framer`] keeps the remainder between
//! pushes, so the hops it yields are the same however the input was cut up.

#[derive(Debug, Clone)]
pub struct Framer {
    hop: usize,
    buf: Vec<f32>,
    start: usize,
}

impl Framer {
    pub fn new(hop: usize) -> Self {
        assert!(hop > 0);
        Self {
            hop,
            buf: Vec::new(),
            start: 0,
        }
    }

    /// Adds samples.
    pub fn push(&mut self, samples: &[f32]) {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(samples);
    }

    /// Takes the next whole hop, if there is one.
    pub fn next_hop(&mut self) -> Option<&[f32]> {
        if self.buf.len() - self.start < self.hop {
            return None;
        }
        let s = self.start;
        self.start += self.hop;
        Some(&self.buf[s..s + self.hop])
    }

    /// Samples waiting that do not fill a hop.
    pub fn remainder(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Pads the last partial hop with zeros so it can be stepped (end of a stream).
    /// Returns the number of real samples in it, or 0 if there was none.
    pub fn pad_last(&mut self) -> usize {
        let rem = self.remainder();
        if rem == 0 || rem >= self.hop {
            return 0;
        }
        self.buf.resize(self.start + self.hop, 0.0);
        rem
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hops_do_not_depend_on_push_sizes() {
        let data: Vec<f32> = (0..1000).map(|i| i as f32).collect();
        let mut a = Framer::new(160);
        a.push(&data);
        let mut ha = Vec::new();
        while let Some(h) = a.next_hop() {
            ha.extend_from_slice(h);
        }
        let mut b = Framer::new(160);
        let mut hb = Vec::new();
        for piece in data.chunks(7) {
            b.push(piece);
            while let Some(h) = b.next_hop() {
                hb.extend_from_slice(h);
            }
        }
        assert_eq!(ha, hb);
        assert_eq!(ha.len(), 960);
        assert_eq!(a.remainder(), 40);
        assert_eq!(a.pad_last(), 40);
        assert_eq!(a.next_hop().unwrap()[39], 999.0);
    }
}
