//! The machine convjit compiles for, and the one place that knows it: the
//! vector ISA the emitters write (its vector type, lanes and register
//! file), whether the host fuses multiply-add, and the data caches the
//! heuristics size their buffers by, read from the host.
//!
//! Everything else asks here: the schedule's bounds on register tiles
//! ([`VectorIsa::max_accumulators`]), the channel-blocked input copy of
//! Cranelift's depthwise tiles ([`LANES`] channels per block; an assembled
//! tile's block is its ISA's lanes), the emitters' loads, splats and stores
//! ([`VectorIsa::ty`]), the fused block's band buffer ([`Caches::l2`]).
//! A wider vector backend is a second [`VectorIsa`], not a sweep through
//! the crate.

use std::path::Path;
use std::sync::OnceLock;

use cranelift_codegen::ir::{Type, types};
use serde::{Deserialize, Serialize};

/// A vector instruction set as the emitters see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VectorIsa {
    /// Its name in listings and reports.
    pub name: &'static str,
    /// The Cranelift type of one vector of f32.
    pub ty: Type,
    /// f32 lanes per vector.
    pub lanes: usize,
    /// Vector registers the register allocator can hand out.
    pub registers: usize,
}

impl VectorIsa {
    /// 128-bit vectors of 4 f32 in 16 registers (SSE/AVX `xmm0`–`xmm15`):
    /// what Cranelift's x86-64 backend emits, whatever wider vectors the
    /// host has.
    pub const F32X4: VectorIsa =
        VectorIsa { name: "f32x4", ty: types::F32X4, lanes: 4, registers: 16 };

    /// Bytes of one vector.
    pub const fn bytes(self) -> usize {
        self.lanes * 4
    }

    /// Accumulators one register tile may hold: every register but two,
    /// one for the operand a tile step reuses and one for the fresh
    /// operand of each multiply-add. More, and the allocator spills
    /// accumulators inside the reduction loop (14 on f32x4: the measured
    /// best tiles hold 12 to 14).
    pub const fn max_accumulators(self) -> usize {
        self.registers - 2
    }
}

/// The vector ISA Cranelift's emitters write for: the widest type its
/// x86-64 backend emits. The register tiles of wider ISAs ([`Isa`]) are
/// assembled (`codegen::wide`); everything around them stays this.
pub const VECTOR: VectorIsa = VectorIsa::F32X4;

/// The vector instruction set a kernel's register tiles use. In schedules
/// and on the command line: `"sse"`, `"avx2"`, `"avx512"`.
///
/// | ISA | vector | register tile from |
/// |---|---|---|
/// | `sse` | 128-bit, 4 f32 (VEX-encoded with FMA where the host has it) | Cranelift IR |
/// | `avx2` | 256-bit `ymm`, 8 f32, AVX2 + FMA | assembled |
/// | `avx512` | 512-bit `zmm`, 16 f32, AVX-512F | assembled |
///
/// Cranelift's x86-64 backend expresses no vector wider than 128 bits, so
/// the wider tiles are machine code assembled for the layer and linked
/// into the kernel's JIT module; the loops around them stay Cranelift IR.
/// The order is the order of width: a host that has one has the ones
/// before it.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Isa {
    /// 128-bit vectors, Cranelift's own: every host.
    #[default]
    Sse,
    /// 256-bit vectors with fused multiply-add.
    Avx2,
    /// 512-bit vectors.
    Avx512,
}

impl Isa {
    /// Every ISA, narrowest first.
    pub const ALL: [Isa; 3] = [Isa::Sse, Isa::Avx2, Isa::Avx512];

    /// Its name in schedules, reports and `--isa`.
    pub const fn name(self) -> &'static str {
        match self {
            Isa::Sse => "sse",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// f32 lanes of one vector.
    pub const fn lanes(self) -> usize {
        match self {
            Isa::Sse => 4,
            Isa::Avx2 => 8,
            Isa::Avx512 => 16,
        }
    }

    /// Bytes of one vector.
    pub const fn bytes(self) -> usize {
        self.lanes() * 4
    }

    /// Whether its tiles are assembled rather than Cranelift IR.
    pub const fn is_assembled(self) -> bool {
        !matches!(self, Isa::Sse)
    }

    /// The ISA named `name` (see [`Isa::name`]).
    pub fn from_name(name: &str) -> Option<Isa> {
        Isa::ALL.into_iter().find(|isa| isa.name() == name)
    }

    /// Whether this host can run its code: AVX2 with FMA, or AVX-512F
    /// (with AVX2 and FMA, which every AVX-512 core has). The assembled
    /// tiles follow the System V calling convention, which `extern "C"` is
    /// on x86-64 Unix hosts: elsewhere, `sse` only.
    pub fn on_host(self) -> bool {
        match self {
            Isa::Sse => true,
            #[cfg(all(target_arch = "x86_64", unix))]
            Isa::Avx2 => {
                std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
            }
            #[cfg(all(target_arch = "x86_64", unix))]
            Isa::Avx512 => Isa::Avx2.on_host() && std::is_x86_feature_detected!("avx512f"),
            #[cfg(not(all(target_arch = "x86_64", unix)))]
            _ => false,
        }
    }

    /// The widest ISA this host has, detected once: AVX-512F, else
    /// AVX2 + FMA, else `sse`.
    pub fn host() -> Isa {
        static HOST: OnceLock<Isa> = OnceLock::new();
        *HOST.get_or_init(|| {
            Isa::ALL.into_iter().rev().find(|isa| isa.on_host()).unwrap_or_default()
        })
    }

    /// The ISAs this host has, narrowest first.
    pub fn available() -> impl Iterator<Item = Isa> {
        Isa::ALL.into_iter().filter(|isa| *isa <= Isa::host())
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Isa {
    type Err = String;

    fn from_str(s: &str) -> Result<Isa, String> {
        Isa::from_name(s).ok_or_else(|| format!("unknown ISA {s:?}: expected sse, avx2 or avx512"))
    }
}

/// f32 lanes of [`VECTOR`]: the channels of one block of a channel-blocked
/// copy, the pixels of one vector of the width strategy.
pub const LANES: usize = VECTOR.lanes;

/// Whether the host has fused multiply-add that Cranelift can emit for
/// vectors (x86-64: FMA3, with the AVX it is encoded in; aarch64: always).
#[cfg(target_arch = "x86_64")]
pub fn host_has_fma() -> bool {
    std::is_x86_feature_detected!("fma") && std::is_x86_feature_detected!("avx")
}

/// Whether the host has fused multiply-add that Cranelift can emit for
/// vectors (x86-64: FMA3, with the AVX it is encoded in; aarch64: always).
#[cfg(not(target_arch = "x86_64"))]
pub fn host_has_fma() -> bool {
    cfg!(target_arch = "aarch64")
}

/// The sizes of the host's data caches, per core (L1d, L2) and shared (L3),
/// in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caches {
    /// Level-1 data cache.
    pub l1d: usize,
    /// Level-2 cache.
    pub l2: usize,
    /// Last-level cache, when the host has a third level.
    pub l3: Option<usize>,
}

impl Caches {
    /// What the heuristics assume where the host does not say: 32 KiB L1d
    /// and 2 MiB L2, the smallest of the x86-64 server cores convjit is
    /// measured on.
    pub const FALLBACK: Caches = Caches { l1d: 32 << 10, l2: 2 << 20, l3: None };

    /// The host's caches, read once from Linux's sysfs (CPU 0); where a
    /// level is not described there, [`Caches::FALLBACK`]'s.
    pub fn host() -> Caches {
        static HOST: OnceLock<Caches> = OnceLock::new();
        *HOST.get_or_init(|| Caches::read(Path::new("/sys/devices/system/cpu/cpu0/cache")))
    }

    /// The caches described under `dir` (sysfs's `cache` folder of one CPU:
    /// `index*/level`, `index*/type`, `index*/size`), the fallback's for a
    /// level it does not describe.
    pub fn read(dir: &Path) -> Caches {
        let mut caches = Caches::FALLBACK;
        let Ok(entries) = std::fs::read_dir(dir) else { return caches };
        for entry in entries.flatten() {
            let path = entry.path();
            let field = |name: &str| {
                // Each file holds one short line.
                std::fs::read_to_string(path.join(name)).ok().map(|s| s.trim().to_string())
            };
            let (Some(level), Some(kind), Some(size)) =
                (field("level"), field("type"), field("size"))
            else {
                continue;
            };
            let Some(size) = parse_size(&size) else { continue };
            match (level.as_str(), kind.as_str()) {
                ("1", "Data" | "Unified") => caches.l1d = size,
                ("2", "Data" | "Unified") => caches.l2 = size,
                ("3", "Data" | "Unified") => caches.l3 = Some(size),
                _ => {}
            }
        }
        caches
    }
}

/// A cache size as sysfs writes it: bytes, or a count of `K`, `M` or `G`
/// (binary units). `None` for anything else, or zero.
pub fn parse_size(text: &str) -> Option<usize> {
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, ""),
    };
    let shift = match unit {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        _ => return None,
    };
    let count: usize = digits.parse().ok()?;
    count.checked_mul(1 << shift).filter(|&n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_sizes_parse_as_sysfs_writes_them() {
        assert_eq!(parse_size("48K"), Some(48 << 10));
        assert_eq!(parse_size("2048K"), Some(2 << 20));
        assert_eq!(parse_size("32M"), Some(32 << 20));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("0K"), None);
        assert_eq!(parse_size("K"), None);
        assert_eq!(parse_size("4 K"), None);
        assert_eq!(parse_size("99999999999999999999G"), None);
    }

    #[test]
    fn caches_are_read_per_level_and_the_rest_falls_back() {
        let dir = std::env::temp_dir().join(format!("convjit-caches-{}", std::process::id()));
        let write = |index: &str, level: &str, kind: &str, size: &str| {
            let d = dir.join(index);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("level"), format!("{level}\n")).unwrap();
            std::fs::write(d.join("type"), format!("{kind}\n")).unwrap();
            std::fs::write(d.join("size"), format!("{size}\n")).unwrap();
        };
        write("index0", "1", "Data", "48K");
        write("index1", "1", "Instruction", "64K");
        write("index2", "2", "Unified", "1280K");
        let caches = Caches::read(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(caches, Caches { l1d: 48 << 10, l2: 1280 << 10, l3: None });
        assert_eq!(Caches::read(Path::new("/nonexistent/cache")), Caches::FALLBACK);
    }

    #[test]
    fn the_register_tile_leaves_room_for_its_operands() {
        assert_eq!(VECTOR.max_accumulators(), 14);
        assert_eq!(VECTOR.bytes(), 16);
        assert_eq!(VECTOR.ty.lane_count() as usize, VECTOR.lanes);
    }
}
