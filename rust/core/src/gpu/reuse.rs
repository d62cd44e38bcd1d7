//! What the GPU path keeps between calls so that a call creates no device objects in the
//! steady state: the kernels' parameters in one uniform buffer read at dynamic offsets, bind
//! groups keyed by the buffers they bind, freed array buffers kept for the next allocation of
//! the same size, and one read-back staging buffer.
//!
//! Every cached object that names an array buffer is dropped when that buffer is (see
//! `Buffer`'s `Drop`), so the caches never keep a user's memory alive.

use std::collections::HashMap;

/// Parameter slots for the dispatches of one submission, at `stride` bytes each (the device's
/// uniform offset alignment). A slot is rewritten by the next call: `Queue::write_buffer`
/// runs on the queue after the work submitted before it, so the earlier dispatch has read it.
pub(super) struct ParamRing {
    pub(super) buffer: wgpu::Buffer,
    pub(super) slots: u64,
    pub(super) stride: u64,
}

/// Which kernel a bind group serves: its layouts differ.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Kernel {
    Gemm,
    ColumnSums,
}

/// The submission side: the parameter ring and the bind groups over it. Held locked from the
/// parameters' write to the submit, so two threads never interleave their slots.
pub(super) struct Submit {
    pub(super) ring: Option<ParamRing>,
    pub(super) bind_groups: HashMap<(Kernel, [u64; 4]), wgpu::BindGroup>,
}

/// The most bind groups kept; past it the map starts again (a model touches a few dozen).
pub(super) const MAX_BIND_GROUPS: usize = 256;

impl Submit {
    pub(super) fn new() -> Self {
        Submit { ring: None, bind_groups: HashMap::new() }
    }

    /// The ring, grown (and the bind groups over the old one dropped) to hold `slots`.
    pub(super) fn ring(&mut self, device: &wgpu::Device, slots: u64, stride: u64) -> &ParamRing {
        if self.ring.as_ref().is_none_or(|r| r.slots < slots) {
            let slots = slots.max(self.ring.as_ref().map_or(16, |r| r.slots * 2));
            let buffer = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("matgrad params"),
                size: slots * stride,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            self.bind_groups.clear();
            self.ring = Some(ParamRing { buffer, slots, stride });
        }
        self.ring.as_ref().expect("set above")
    }

    /// Forgets the bind groups that bind buffer `id`.
    pub(super) fn forget(&mut self, id: u64) {
        self.bind_groups.retain(|(_, ids), _| !ids.contains(&id));
    }
}

/// Freed array buffers by size in bytes, kept up to a total.
pub(super) struct Pool {
    free: Vec<wgpu::Buffer>,
    bytes: u64,
}

/// The most freed bytes kept, and the largest buffer kept.
const POOL_BYTES: u64 = 512 << 20;
const POOL_LARGEST: u64 = 128 << 20;

impl Pool {
    pub(super) fn new() -> Self {
        Pool { free: Vec::new(), bytes: 0 }
    }

    /// A kept buffer of exactly `size` bytes, if any.
    pub(super) fn take(&mut self, size: u64) -> Option<wgpu::Buffer> {
        let at = self.free.iter().rposition(|b| b.size() == size)?;
        self.bytes -= size;
        Some(self.free.swap_remove(at))
    }

    /// Keeps `buffer`, dropping the oldest kept ones past the total.
    pub(super) fn give(&mut self, buffer: wgpu::Buffer) {
        let size = buffer.size();
        if size > POOL_LARGEST {
            return;
        }
        self.bytes += size;
        self.free.push(buffer);
        while self.bytes > POOL_BYTES {
            let old = self.free.remove(0);
            self.bytes -= old.size();
        }
    }
}
