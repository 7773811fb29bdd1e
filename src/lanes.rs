//! f64 arithmetic for rows taken [`LANES`] at a time: `exp`, `ln` and `ln_1p` written
//! without branches or table lookups, so that a loop over lanes compiles to vector
//! instructions, and the instruction set those loops run on, chosen when the program runs
//! ([`isa`]).
//!
//! The CPU backend's mixture head spends most of its time in these functions (with `libm`'s
//! scalar calls it was more than half of a training step). They are accurate to about one
//! unit in the last place (tested against the standard library over their whole range), and
//! they use plain multiplies and adds, never fused ones: Rust does not contract `a * b + c`,
//! so a result is the same bits whether it is computed one lane at a time, with SSE2, AVX2
//! or AVX-512, on any x86 machine.

/// Rows computed together.
pub const LANES: usize = 8;

/// The widest vector instructions the CPU running this program has, of those the CPU
/// backend's kernels are compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512 (F, DQ, VL): 8 f64 lanes a register.
    Avx512,
    /// AVX2 with FMA: 4 f64 lanes.
    Avx2,
    /// What the build targets without run-time detection (SSE2 on x86-64, NEON on aarch64).
    Baseline,
}

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "AVX-512",
            Isa::Avx2 => "AVX2+FMA",
            Isa::Baseline => {
                if cfg!(target_arch = "aarch64") {
                    "NEON"
                } else if cfg!(target_arch = "x86_64") {
                    "SSE2"
                } else {
                    "scalar"
                }
            }
        }
    }
}

/// The instruction set the CPU backend's kernels run on here (detected once).
/// `MDN_CPU_ISA=baseline|avx2|avx512` asks for a narrower one, to compare them.
pub fn isa() -> Isa {
    static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
    *ISA.get_or_init(|| {
        let best = detect();
        let asked = match std::env::var("MDN_CPU_ISA").ok().as_deref() {
            Some("baseline") => Isa::Baseline,
            Some("avx2") => Isa::Avx2,
            _ => best,
        };
        // Never wider than the CPU has.
        match (asked, best) {
            (Isa::Avx512, Isa::Avx512) => Isa::Avx512,
            (Isa::Avx512 | Isa::Avx2, Isa::Avx512 | Isa::Avx2) => Isa::Avx2,
            _ => Isa::Baseline,
        }
    })
}

fn detect() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512vl")
        {
            return Isa::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Isa::Avx2;
        }
    }
    Isa::Baseline
}

/// A value per lane.
pub type Lanes = [f64; LANES];

/// The lane group of `v` starting at `start`.
#[inline(always)]
pub fn at(v: &[f64], start: usize) -> Lanes {
    v[start..start + LANES]
        .try_into()
        .expect("a whole lane group")
}

/// `f` on every lane: a loop the compiler turns into vector instructions when `f` is one of
/// this module's (inlined, without branches or calls).
#[inline(always)]
pub fn map(x: &Lanes, f: impl Fn(f64) -> f64) -> Lanes {
    let mut out = [0.0; LANES];
    for i in 0..LANES {
        out[i] = f(x[i]);
    }
    out
}

const LOG2E: f64 = std::f64::consts::LOG2_E;
/// ln 2 in two parts (fdlibm's): the high part has its low bits zero, so that `k * LN2_HI`
/// is exact for every exponent `k` a double has.
#[allow(clippy::excessive_precision)]
const LN2_HI: f64 = 6.931_471_803_691_238_164_90e-1;
#[allow(clippy::excessive_precision)]
const LN2_LO: f64 = 1.908_214_929_270_587_700_02e-10;
/// 1.5 * 2^52: adding it rounds a double of magnitude below 2^51 to an integer, which its low
/// bits then hold.
const ROUND: f64 = 6_755_399_441_055_744.0;

/// 2^k for an integer-valued `kf` (|k| <= 1023), built from its bits.
#[inline(always)]
fn pow2(kf: f64) -> f64 {
    let k = (kf + ROUND).to_bits().wrapping_sub(ROUND.to_bits());
    f64::from_bits(k.wrapping_add(1023) << 52)
}

/// e^x to about one ulp; 0 below the smallest subnormal, infinity above the largest double,
/// NaN for NaN.
#[inline(always)]
pub fn exp(x: f64) -> f64 {
    let xc = x.clamp(-746.0, 710.0);
    // x = k ln 2 + r, |r| <= ln 2 / 2.
    let kf = (xc * LOG2E + ROUND) - ROUND;
    let r = (xc - kf * LN2_HI) - kf * LN2_LO;
    // e^r by its Taylor series to r^13 (the next term is below 1e-17 relative).
    let mut p = 1.0 / 6_227_020_800.0;
    p = p * r + 1.0 / 479_001_600.0;
    p = p * r + 1.0 / 39_916_800.0;
    p = p * r + 1.0 / 3_628_800.0;
    p = p * r + 1.0 / 362_880.0;
    p = p * r + 1.0 / 40_320.0;
    p = p * r + 1.0 / 5_040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    // 2^k in two factors, each a normal double, so that results in the subnormal range and
    // near the top come out right.
    let k1 = (kf * 0.5 + ROUND) - ROUND;
    let y = p * pow2(k1) * pow2(kf - k1);
    if x.is_nan() {
        x
    } else if x > 709.782_712_893_384 {
        f64::INFINITY
    } else if x < -745.133_219_101_941_1 {
        0.0
    } else {
        y
    }
}

/// fdlibm's minimax coefficients for ln((1 + s) / (1 - s)) = 2s + s (Lg1 s^2 + Lg2 s^4 + ...).
#[allow(clippy::excessive_precision)]
const LG1: f64 = 6.666_666_666_666_735_13e-1;
#[allow(clippy::excessive_precision)]
const LG2: f64 = 3.999_999_999_940_941_908e-1;
#[allow(clippy::excessive_precision)]
const LG3: f64 = 2.857_142_874_366_239_149e-1;
#[allow(clippy::excessive_precision)]
const LG4: f64 = 2.222_219_843_214_978_396e-1;
#[allow(clippy::excessive_precision)]
const LG5: f64 = 1.818_357_216_161_805_012e-1;
#[allow(clippy::excessive_precision)]
const LG6: f64 = 1.531_383_769_920_937_332e-1;
#[allow(clippy::excessive_precision)]
const LG7: f64 = 1.479_819_860_511_658_591e-1;

/// ln x to about one ulp; -infinity at 0, NaN below 0 and for NaN, infinity at infinity.
#[inline(always)]
pub fn ln(x: f64) -> f64 {
    // Subnormals scaled into the normal range first.
    let tiny = x < f64::MIN_POSITIVE;
    let xs = if tiny {
        x * 18_014_398_509_481_984.0
    } else {
        x
    }; // 2^54
    let bits = xs.to_bits();
    let e = ((bits >> 52) & 0x7ff) as i64 - 1023 - if tiny { 54 } else { 0 };
    let m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    // m in [sqrt(1/2), sqrt(2)).
    let big = m > std::f64::consts::SQRT_2;
    let m = if big { m * 0.5 } else { m };
    // The exponent as a double through the bits of ROUND (no integer conversion, which
    // AVX2 does not have for 64-bit lanes).
    let kf = f64::from_bits(ROUND.to_bits().wrapping_add((e + i64::from(big)) as u64)) - ROUND;
    let f = m - 1.0;
    let s = f / (2.0 + f);
    let z = s * s;
    let w = z * z;
    let t1 = w * (LG2 + w * (LG4 + w * LG6));
    let t2 = z * (LG1 + w * (LG3 + w * (LG5 + w * LG7)));
    let r = t2 + t1;
    let hfsq = 0.5 * f * f;
    let y = kf * LN2_HI - ((hfsq - (s * (hfsq + r) + kf * LN2_LO)) - f);
    if x.is_nan() || x < 0.0 {
        f64::NAN
    } else if x == 0.0 {
        f64::NEG_INFINITY
    } else if x == f64::INFINITY {
        x
    } else {
        y
    }
}

/// ln(1 + x) to about one ulp for x > -1, also where x is far smaller than 1.
#[inline(always)]
pub fn ln_1p(x: f64) -> f64 {
    let w = 1.0 + x;
    // The rounding error of 1 + x, carried to first order.
    let c = (x - (w - 1.0)) / w;
    let y = ln(w) + c;
    if x == f64::INFINITY {
        x
    } else if w == 0.0 {
        f64::NEG_INFINITY
    } else {
        y
    }
}

/// `exp`, `ln` and `ln_1p` over a whole group of lanes: on AVX-512 with its intrinsics
/// (the same operations as the scalar functions, in the same order, so the same bits), else
/// lane by lane for the compiler to vectorise.
pub trait LaneMath {
    /// # Safety
    /// The CPU must have the instructions the implementation is for.
    unsafe fn exp(x: &Lanes) -> Lanes;
    /// # Safety
    /// As [`LaneMath::exp`].
    unsafe fn ln(x: &Lanes) -> Lanes;
    /// # Safety
    /// As [`LaneMath::exp`].
    unsafe fn ln_1p(x: &Lanes) -> Lanes;
}

/// [`LaneMath`] lane by lane.
pub struct Portable;

impl LaneMath for Portable {
    #[inline(always)]
    unsafe fn exp(x: &Lanes) -> Lanes {
        map(x, exp)
    }
    #[inline(always)]
    unsafe fn ln(x: &Lanes) -> Lanes {
        map(x, ln)
    }
    #[inline(always)]
    unsafe fn ln_1p(x: &Lanes) -> Lanes {
        map(x, ln_1p)
    }
}

/// [`LaneMath`] with AVX-512 intrinsics, 8 lanes a register.
#[cfg(target_arch = "x86_64")]
pub struct Avx512;

#[cfg(target_arch = "x86_64")]
impl LaneMath for Avx512 {
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    unsafe fn exp(x: &Lanes) -> Lanes {
        use std::arch::x86_64::*;
        let mut out = [0.0; LANES];
        // SAFETY: `x` and `out` are LANES f64, the 64 bytes the load and store touch.
        unsafe { _mm512_storeu_pd(out.as_mut_ptr(), avx512::exp(_mm512_loadu_pd(x.as_ptr()))) };
        out
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    unsafe fn ln(x: &Lanes) -> Lanes {
        use std::arch::x86_64::*;
        let mut out = [0.0; LANES];
        // SAFETY: `x` and `out` are LANES f64, the 64 bytes the load and store touch.
        unsafe { _mm512_storeu_pd(out.as_mut_ptr(), avx512::ln(_mm512_loadu_pd(x.as_ptr()))) };
        out
    }
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    unsafe fn ln_1p(x: &Lanes) -> Lanes {
        use std::arch::x86_64::*;
        let mut out = [0.0; LANES];
        // SAFETY: `x` and `out` are LANES f64, the 64 bytes the load and store touch.
        unsafe { _mm512_storeu_pd(out.as_mut_ptr(), avx512::ln_1p(_mm512_loadu_pd(x.as_ptr()))) };
        out
    }
}

/// The scalar functions' operations on eight lanes at once, step for step.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::*;
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    fn set(v: f64) -> __m512d {
        _mm512_set1_pd(v)
    }

    /// 2^k for integer-valued lanes `kf`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    fn pow2(kf: __m512d) -> __m512d {
        let k = _mm512_sub_epi64(
            _mm512_castpd_si512(_mm512_add_pd(kf, set(ROUND))),
            _mm512_set1_epi64(ROUND.to_bits() as i64),
        );
        _mm512_castsi512_pd(_mm512_slli_epi64::<52>(_mm512_add_epi64(
            k,
            _mm512_set1_epi64(1023),
        )))
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    pub fn exp(x: __m512d) -> __m512d {
        // x.clamp(-746, 710): max then min, NaN lanes replaced below.
        let xc = _mm512_min_pd(_mm512_max_pd(x, set(-746.0)), set(710.0));
        let kf = _mm512_sub_pd(
            _mm512_add_pd(_mm512_mul_pd(xc, set(LOG2E)), set(ROUND)),
            set(ROUND),
        );
        let r = _mm512_sub_pd(
            _mm512_sub_pd(xc, _mm512_mul_pd(kf, set(LN2_HI))),
            _mm512_mul_pd(kf, set(LN2_LO)),
        );
        let mut p = set(1.0 / 6_227_020_800.0);
        for c in [
            1.0 / 479_001_600.0,
            1.0 / 39_916_800.0,
            1.0 / 3_628_800.0,
            1.0 / 362_880.0,
            1.0 / 40_320.0,
            1.0 / 5_040.0,
            1.0 / 720.0,
            1.0 / 120.0,
            1.0 / 24.0,
            1.0 / 6.0,
            0.5,
            1.0,
            1.0,
        ] {
            p = _mm512_add_pd(_mm512_mul_pd(p, r), set(c));
        }
        let k1 = _mm512_sub_pd(
            _mm512_add_pd(_mm512_mul_pd(kf, set(0.5)), set(ROUND)),
            set(ROUND),
        );
        let y = _mm512_mul_pd(_mm512_mul_pd(p, pow2(k1)), pow2(_mm512_sub_pd(kf, k1)));
        let over = _mm512_cmp_pd_mask::<_CMP_GT_OQ>(x, set(709.782_712_893_384));
        let under = _mm512_cmp_pd_mask::<_CMP_LT_OQ>(x, set(-745.133_219_101_941_1));
        let nan = _mm512_cmp_pd_mask::<_CMP_UNORD_Q>(x, x);
        let y = _mm512_mask_blend_pd(over, y, set(f64::INFINITY));
        let y = _mm512_mask_blend_pd(under, y, set(0.0));
        _mm512_mask_blend_pd(nan, y, x)
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    pub fn ln(x: __m512d) -> __m512d {
        let tiny = _mm512_cmp_pd_mask::<_CMP_LT_OQ>(x, set(f64::MIN_POSITIVE));
        let xs = _mm512_mask_blend_pd(tiny, x, _mm512_mul_pd(x, set(18_014_398_509_481_984.0)));
        let bits = _mm512_castpd_si512(xs);
        let e = _mm512_sub_epi64(
            _mm512_and_si512(_mm512_srli_epi64::<52>(bits), _mm512_set1_epi64(0x7ff)),
            _mm512_set1_epi64(1023),
        );
        let e = _mm512_mask_sub_epi64(e, tiny, e, _mm512_set1_epi64(54));
        let m = _mm512_castsi512_pd(_mm512_or_si512(
            _mm512_and_si512(bits, _mm512_set1_epi64(0x000f_ffff_ffff_ffff)),
            _mm512_set1_epi64(0x3ff0_0000_0000_0000),
        ));
        let big = _mm512_cmp_pd_mask::<_CMP_GT_OQ>(m, set(std::f64::consts::SQRT_2));
        let m = _mm512_mask_blend_pd(big, m, _mm512_mul_pd(m, set(0.5)));
        let e = _mm512_mask_add_epi64(e, big, e, _mm512_set1_epi64(1));
        let kf = _mm512_sub_pd(
            _mm512_castsi512_pd(_mm512_add_epi64(
                _mm512_set1_epi64(ROUND.to_bits() as i64),
                e,
            )),
            set(ROUND),
        );
        let f = _mm512_sub_pd(m, set(1.0));
        let s = _mm512_div_pd(f, _mm512_add_pd(set(2.0), f));
        let z = _mm512_mul_pd(s, s);
        let w = _mm512_mul_pd(z, z);
        // t1 = w * (LG2 + w * (LG4 + w * LG6)), t2 = z * (LG1 + w * (LG3 + w * (LG5 + w * LG7))).
        let t1 = _mm512_mul_pd(
            w,
            _mm512_add_pd(
                set(LG2),
                _mm512_mul_pd(w, _mm512_add_pd(set(LG4), _mm512_mul_pd(w, set(LG6)))),
            ),
        );
        let t2 = _mm512_mul_pd(
            z,
            _mm512_add_pd(
                set(LG1),
                _mm512_mul_pd(
                    w,
                    _mm512_add_pd(
                        set(LG3),
                        _mm512_mul_pd(w, _mm512_add_pd(set(LG5), _mm512_mul_pd(w, set(LG7)))),
                    ),
                ),
            ),
        );
        let r = _mm512_add_pd(t2, t1);
        let hfsq = _mm512_mul_pd(_mm512_mul_pd(set(0.5), f), f);
        // kf * LN2_HI - ((hfsq - (s * (hfsq + r) + kf * LN2_LO)) - f)
        let inner = _mm512_add_pd(
            _mm512_mul_pd(s, _mm512_add_pd(hfsq, r)),
            _mm512_mul_pd(kf, set(LN2_LO)),
        );
        let y = _mm512_sub_pd(
            _mm512_mul_pd(kf, set(LN2_HI)),
            _mm512_sub_pd(_mm512_sub_pd(hfsq, inner), f),
        );
        let nan = _mm512_cmp_pd_mask::<_CMP_NGE_UQ>(x, set(0.0))
            & !_mm512_cmp_pd_mask::<_CMP_EQ_OQ>(x, set(0.0));
        let zero = _mm512_cmp_pd_mask::<_CMP_EQ_OQ>(x, set(0.0));
        let inf = _mm512_cmp_pd_mask::<_CMP_EQ_OQ>(x, set(f64::INFINITY));
        let y = _mm512_mask_blend_pd(inf, y, x);
        let y = _mm512_mask_blend_pd(zero, y, set(f64::NEG_INFINITY));
        _mm512_mask_blend_pd(nan, y, set(f64::NAN))
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512dq")]
    pub fn ln_1p(x: __m512d) -> __m512d {
        let w = _mm512_add_pd(set(1.0), x);
        let c = _mm512_div_pd(_mm512_sub_pd(x, _mm512_sub_pd(w, set(1.0))), w);
        let y = _mm512_add_pd(ln(w), c);
        let inf = _mm512_cmp_pd_mask::<_CMP_EQ_OQ>(x, set(f64::INFINITY));
        let zero = _mm512_cmp_pd_mask::<_CMP_EQ_OQ>(w, set(0.0));
        let y = _mm512_mask_blend_pd(zero, y, set(f64::NEG_INFINITY));
        _mm512_mask_blend_pd(inf, y, x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place.
    fn ulps(a: f64, b: f64) -> u64 {
        if a == b || (a.is_nan() && b.is_nan()) {
            return 0;
        }
        let key = |v: f64| {
            let b = v.to_bits() as i64;
            if b < 0 { i64::MIN - b } else { b }
        };
        key(a).abs_diff(key(b))
    }

    fn worst(name: &str, f: fn(f64) -> f64, g: fn(f64) -> f64, xs: impl Iterator<Item = f64>) {
        let (mut worst, mut at) = (0, 0.0);
        for x in xs {
            let u = ulps(f(x), g(x));
            if u > worst {
                (worst, at) = (u, x);
            }
        }
        assert!(
            worst <= 2,
            "{name}: {worst} ulps at {at:e} ({:e} against {:e})",
            f(at),
            g(at)
        );
    }

    /// Values spread over the whole range: every exponent, random mantissas.
    fn spread(lo: f64, hi: f64, n: usize) -> impl Iterator<Item = f64> {
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        (0..n).map(move |_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            lo + (hi - lo) * ((s >> 11) as f64 / (1u64 << 53) as f64)
        })
    }

    #[test]
    fn exp_is_within_two_ulps_everywhere() {
        worst("exp", exp, f64::exp, spread(-745.0, 709.7, 200_000));
        worst("exp", exp, f64::exp, spread(-1.0, 1.0, 200_000));
        worst("exp", exp, f64::exp, spread(-40.0, 0.0, 200_000));
        for (x, want) in [
            (0.0, 1.0),
            (f64::NEG_INFINITY, 0.0),
            (f64::INFINITY, f64::INFINITY),
            (-746.0, 0.0),
            (710.0, f64::INFINITY),
            (-745.1, f64::exp(-745.1)),
            (-708.5, f64::exp(-708.5)),
            (709.7, f64::exp(709.7)),
        ] {
            assert_eq!(exp(x), want, "exp({x})");
        }
        assert!(exp(f64::NAN).is_nan());
    }

    #[test]
    fn ln_is_within_two_ulps_everywhere() {
        let exps = spread(-1074.0, 1023.9, 200_000).map(|e| 2f64.powf(e));
        worst("ln", ln, f64::ln, exps);
        worst("ln", ln, f64::ln, spread(0.5, 2.0, 200_000));
        worst("ln", ln, f64::ln, spread(1e-4, 50.0, 200_000));
        for (x, want) in [
            (1.0, 0.0),
            (0.0, f64::NEG_INFINITY),
            (f64::INFINITY, f64::INFINITY),
            (f64::MIN_POSITIVE / 4.0, (f64::MIN_POSITIVE / 4.0).ln()),
            (5e-324, 5e-324f64.ln()),
            (f64::MAX, f64::MAX.ln()),
        ] {
            assert_eq!(ln(x), want, "ln({x:e})");
        }
        assert!(ln(-1.0).is_nan() && ln(f64::NAN).is_nan());
    }

    #[test]
    fn ln_1p_is_within_two_ulps_for_what_softplus_gives_it() {
        // softplus takes ln(1 + e^-|x|): arguments in [0, 1], down to the smallest.
        let exps = spread(-1074.0, 0.0, 200_000).map(|e| 2f64.powf(e));
        worst("ln_1p", ln_1p, f64::ln_1p, exps);
        worst("ln_1p", ln_1p, f64::ln_1p, spread(0.0, 1.0, 200_000));
        worst("ln_1p", ln_1p, f64::ln_1p, spread(-0.9, 1e6, 200_000));
        assert_eq!(ln_1p(0.0), 0.0);
        assert_eq!(ln_1p(f64::INFINITY), f64::INFINITY);
        assert!(ln_1p(f64::NAN).is_nan());
    }

    #[test]
    fn avx512_lanes_give_the_scalar_bits() {
        #[cfg(target_arch = "x86_64")]
        if isa() == Isa::Avx512 {
            let mut xs: Vec<f64> = spread(-800.0, 800.0, 40_000).collect();
            xs.extend(spread(-2.0, 2.0, 40_000));
            xs.extend(spread(-1074.0, 1023.0, 40_000).map(|e| 2f64.powf(e)));
            xs.extend([
                0.0,
                -0.0,
                -1.0,
                f64::INFINITY,
                f64::NEG_INFINITY,
                f64::NAN,
                5e-324,
                f64::MAX,
            ]);
            while !xs.len().is_multiple_of(LANES) {
                xs.push(1.0);
            }
            for chunk in xs.chunks_exact(LANES) {
                let v: Lanes = chunk.try_into().unwrap();
                // SAFETY: isa() found AVX-512 on this CPU.
                let (e, l, l1) = unsafe { (Avx512::exp(&v), Avx512::ln(&v), Avx512::ln_1p(&v)) };
                for i in 0..LANES {
                    let x = v[i];
                    assert_eq!(e[i].to_bits(), exp(x).to_bits(), "exp({x:e})");
                    assert_eq!(l[i].to_bits(), ln(x).to_bits(), "ln({x:e})");
                    assert_eq!(l1[i].to_bits(), ln_1p(x).to_bits(), "ln_1p({x:e})");
                }
            }
        }
    }

    #[test]
    fn lanes_give_the_scalar_bits() {
        // The same function over a lane array (vectorised) and one value at a time.
        let xs: Vec<f64> = spread(-50.0, 50.0, 4096).collect();
        let mut v = [0.0; LANES];
        for chunk in xs.chunks_exact(LANES) {
            for i in 0..LANES {
                v[i] = exp(chunk[i]) + ln(chunk[i].abs()) + ln_1p(exp(-chunk[i].abs()));
            }
            for i in 0..LANES {
                let x = std::hint::black_box(chunk[i]);
                let s = exp(x) + ln(x.abs()) + ln_1p(exp(-x.abs()));
                assert_eq!(v[i].to_bits(), s.to_bits(), "lane {i} at {x}");
            }
        }
    }
}
