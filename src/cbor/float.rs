//! Exact conversions between IEEE 754 half, single and double precision,
//! done on bit patterns so that NaN payloads survive (hardware conversions
//! may quiet a signalling NaN). Used to pick and to check the shortest float
//! encoding that keeps a value (RFC 8949 §4.2.1, §4.2.2).

/// A floating-point value held as the bits of the `f64` it widens to.
/// Equality is bitwise: `NaN == NaN` when payloads match and `0.0 != -0.0`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Float(u64);

impl Float {
    /// From the bits of an `f64`.
    pub const fn from_bits(bits: u64) -> Self {
        Self(bits)
    }

    /// From an `f64` value.
    pub fn from_f64(value: f64) -> Self {
        Self(value.to_bits())
    }

    /// From the bits of an IEEE 754 half-precision value.
    pub fn from_f16_bits(bits: u16) -> Self {
        Self(f16_to_f64(bits))
    }

    /// From the bits of an `f32`.
    pub fn from_f32_bits(bits: u32) -> Self {
        Self(f32_to_f64(bits))
    }

    /// The bits of the `f64`.
    pub const fn to_bits(self) -> u64 {
        self.0
    }

    /// The value.
    pub fn to_f64(self) -> f64 {
        f64::from_bits(self.0)
    }

    /// The shortest encoding that represents this value exactly.
    pub fn shortest(self) -> FloatWidth {
        if let Some(h) = f64_to_f16_exact(self.0) {
            FloatWidth::Half(h)
        } else if let Some(s) = f64_to_f32_exact(self.0) {
            FloatWidth::Single(s)
        } else {
            FloatWidth::Double(self.0)
        }
    }
}

impl core::fmt::Debug for Float {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Float({:?})", self.to_f64())
    }
}

/// A float in one of the three CBOR widths, as bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloatWidth {
    /// Additional information 25.
    Half(u16),
    /// Additional information 26.
    Single(u32),
    /// Additional information 27.
    Double(u64),
}

const F64_EXP_MASK: u64 = 0x7ff;
const F64_MANT_MASK: u64 = (1 << 52) - 1;

fn low_bits_zero(value: u64, count: u32) -> bool {
    value & ((1u64 << count) - 1) == 0
}

/// Widens half-precision bits to double-precision bits exactly.
pub(crate) fn f16_to_f64(bits: u16) -> u64 {
    let sign = u64::from(bits >> 15) << 63;
    let exp = u64::from((bits >> 10) & 0x1f);
    let mant = u64::from(bits & 0x3ff);
    match (exp, mant) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal: normalise the mantissa into an f64 normal.
            let mut m = mant;
            let mut e: i64 = -14;
            while m & 0x400 == 0 {
                m <<= 1;
                e -= 1;
            }
            sign | (((e + 1023) as u64) << 52) | ((m & 0x3ff) << 42)
        }
        (0x1f, _) => sign | (F64_EXP_MASK << 52) | (mant << 42),
        _ => sign | ((exp + 1023 - 15) << 52) | (mant << 42),
    }
}

/// Widens single-precision bits to double-precision bits exactly.
pub(crate) fn f32_to_f64(bits: u32) -> u64 {
    let sign = u64::from(bits >> 31) << 63;
    let exp = u64::from((bits >> 23) & 0xff);
    let mant = u64::from(bits & 0x7f_ffff);
    match (exp, mant) {
        (0, 0) => sign,
        (0, _) => {
            let mut m = mant;
            let mut e: i64 = -126;
            while m & 0x80_0000 == 0 {
                m <<= 1;
                e -= 1;
            }
            sign | (((e + 1023) as u64) << 52) | ((m & 0x7f_ffff) << 29)
        }
        (0xff, _) => sign | (F64_EXP_MASK << 52) | (mant << 29),
        _ => sign | ((exp + 1023 - 127) << 52) | (mant << 29),
    }
}

/// Narrows double-precision bits to single precision when no bit is lost.
pub(crate) fn f64_to_f32_exact(bits: u64) -> Option<u32> {
    let sign = ((bits >> 63) as u32) << 31;
    let exp = (bits >> 52) & F64_EXP_MASK;
    let mant = bits & F64_MANT_MASK;
    if exp == F64_EXP_MASK {
        return low_bits_zero(mant, 29).then_some(sign | (0xff << 23) | (mant >> 29) as u32);
    }
    if exp == 0 {
        // Zero, or an f64 subnormal (far below the f32 range).
        return (mant == 0).then_some(sign);
    }
    let e = exp as i64 - 1023;
    if (-126..=127).contains(&e) {
        return low_bits_zero(mant, 29)
            .then(|| sign | (((e + 127) as u32) << 23) | (mant >> 29) as u32);
    }
    if (-149..-126).contains(&e) {
        let full = mant | (1 << 52);
        let shift = (-e - 97) as u32;
        return low_bits_zero(full, shift).then(|| sign | (full >> shift) as u32);
    }
    None
}

/// Narrows double-precision bits to half precision when no bit is lost.
pub(crate) fn f64_to_f16_exact(bits: u64) -> Option<u16> {
    let sign = ((bits >> 63) as u16) << 15;
    let exp = (bits >> 52) & F64_EXP_MASK;
    let mant = bits & F64_MANT_MASK;
    if exp == F64_EXP_MASK {
        return low_bits_zero(mant, 42).then_some(sign | (0x1f << 10) | (mant >> 42) as u16);
    }
    if exp == 0 {
        return (mant == 0).then_some(sign);
    }
    let e = exp as i64 - 1023;
    if (-14..=15).contains(&e) {
        return low_bits_zero(mant, 42)
            .then(|| sign | (((e + 15) as u16) << 10) | (mant >> 42) as u16);
    }
    if (-24..-14).contains(&e) {
        let full = mant | (1 << 52);
        let shift = (28 - e) as u32;
        return low_bits_zero(full, shift).then(|| sign | (full >> shift) as u16);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_half_roundtrips_through_double() {
        for h in 0..=u16::MAX {
            assert_eq!(f64_to_f16_exact(f16_to_f64(h)), Some(h), "half {h:#06x}");
            // A half is also exactly a single.
            let single = f64_to_f32_exact(f16_to_f64(h)).unwrap();
            assert_eq!(f32_to_f64(single), f16_to_f64(h));
        }
    }

    #[test]
    fn half_values_match_their_definition() {
        let v = |h| f64::from_bits(f16_to_f64(h));
        assert_eq!(v(0x3c00), 1.0);
        assert_eq!(v(0x3e00), 1.5);
        assert_eq!(v(0x7bff), 65504.0);
        assert_eq!(v(0x0001), 5.960464477539063e-8);
        assert_eq!(v(0x0400), 0.00006103515625);
        assert_eq!(v(0xc400), -4.0);
        assert_eq!(v(0x7c00), f64::INFINITY);
        assert!(v(0x7e00).is_nan());
        assert_eq!(f16_to_f64(0x8000), (-0.0f64).to_bits());
    }

    #[test]
    fn singles_widen_like_the_hardware_for_non_nan() {
        let samples = [
            0u32,
            1,
            0x7f_ffff,
            0x80_0000,
            0x3f80_0000,
            0x7f7f_ffff,
            0x4780_0000,
            0x8000_0001,
            0xff7f_ffff,
            0x3380_0000,
            0x0040_0000,
        ];
        for s in samples {
            assert_eq!(
                f32_to_f64(s),
                f64::from(f32::from_bits(s)).to_bits(),
                "{s:#x}"
            );
            assert_eq!(f64_to_f32_exact(f32_to_f64(s)), Some(s), "{s:#x}");
        }
    }

    #[test]
    fn nan_payloads_are_kept() {
        let signalling = 0x7f80_0001u32;
        let wide = f32_to_f64(signalling);
        assert_eq!(f64_to_f32_exact(wide), Some(signalling));
        assert_eq!(
            f64_to_f16_exact(wide),
            None,
            "payload bit below the half mantissa"
        );
    }

    #[test]
    fn inexact_values_do_not_narrow() {
        assert_eq!(f64_to_f32_exact(1.1f64.to_bits()), None);
        assert_eq!(f64_to_f16_exact(100000.0f64.to_bits()), None);
        assert_eq!(
            Float::from_f64(100000.0).shortest(),
            FloatWidth::Single(0x47c3_5000)
        );
        assert_eq!(f64_to_f32_exact(1.0e300f64.to_bits()), None);
        assert_eq!(f64_to_f16_exact(f64::MIN_POSITIVE.to_bits()), None);
        // Just below the smallest half subnormal.
        assert_eq!(
            f64_to_f16_exact((5.960464477539063e-8f64 / 2.0).to_bits()),
            None
        );
    }

    #[test]
    fn shortest_prefers_half_then_single() {
        assert_eq!(Float::from_f64(1.5).shortest(), FloatWidth::Half(0x3e00));
        assert_eq!(
            Float::from_f64(3.4028234663852886e38).shortest(),
            FloatWidth::Single(0x7f7f_ffff)
        );
        assert_eq!(
            Float::from_f64(1.1).shortest(),
            FloatWidth::Double(0x3ff1_9999_9999_999a)
        );
        assert_eq!(
            Float::from_f64(f64::NAN).shortest(),
            FloatWidth::Half(0x7e00)
        );
    }
}
