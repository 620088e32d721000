//! The pure half of the w1 reader: `w1_slave` and `temperature` text, the
//! scratchpad, CRC-8, sensor ids and family codes, and each fault's
//! [`Quality`] with its reason. No I/O: every function takes text or bytes.

use crate::sample::Quality;

/// The lowest temperature a DS18B20 reports, °C.
pub const MIN_CELSIUS: f64 = -55.0;
/// The highest temperature a DS18B20 reports, °C.
pub const MAX_CELSIUS: f64 = 125.0;

/// The range a chip can report, °C: the DS18B20, DS18S20, DS1822 and DS1825
/// measure −55…125 °C, the DS28EA00 −40…85 °C. A MAX31850 (family 3b, like
/// the DS1825) reports what its thermocouple measures; its scratchpad does
/// not say which thermocouple type, so it gets the widest span of the
/// MAX31850 variants (K, N, T, E: from −270 °C; R, S: up to 1768 °C; type K
/// alone is −270…1372 °C), well inside its 14-bit format (±2048 °C).
pub fn valid_range(family: u8, max31850: bool) -> (f64, f64) {
    match family {
        0x3b if max31850 => (-270.0, 1768.0),
        0x42 => (-40.0, 85.0),
        _ => (MIN_CELSIUS, MAX_CELSIUS),
    }
}

/// True for a MAX31850 thermocouple converter: family 3b, with configuration
/// byte 4's reserved bits 7…4 reading 1 (a DS1825's bit 7 is always 0).
pub fn is_max31850(family: u8, sp: &[u8; 9]) -> bool {
    family == 0x3b && sp[4] & 0xf0 == 0xf0
}

/// Raw power-on value of the 12-bit families (85.0 °C).
const POWER_ON_RAW: i16 = 0x0550;
/// Raw power-on value of the DS18S20 (85.0 °C in 0.5 °C steps).
const DS18S20_POWER_ON_RAW: i16 = 0x00aa;
/// Scratchpad byte 6 right after power-on, before any conversion.
const POWER_ON_BYTE6: u8 = 0x0c;
/// Raw value of a conversion that ran out of power (127.9375 °C).
const NO_POWER_RAW: i16 = 0x07ff;
/// `temperature` value the kernel prints for [`NO_POWER_RAW`] (2047 * 1000 / 16, truncated).
const NO_POWER_MILLI: i64 = 127_937;

pub(super) const WIRING_HINT: &str = "check wiring and the 4.7 kΩ pull-up";

/// The result of reading or decoding one sensor: °C, or why there is no value.
pub(super) type Decoded = Result<f64, (Quality, String)>;

/// The chip of a temperature-sensor family code, `None` for other families.
///
/// ```
/// use hxlog::sensors::w1::family_kind;
/// assert_eq!(family_kind(0x28), Some("DS18B20"));
/// assert_eq!(family_kind(0x01), None);
/// ```
pub fn family_kind(family: u8) -> Option<&'static str> {
    match family {
        0x10 => Some("DS18S20"),
        0x22 => Some("DS1822"),
        0x28 => Some("DS18B20"),
        0x3b => Some("DS1825/MAX31850K"),
        0x42 => Some("DS28EA00"),
        _ => None,
    }
}

/// The family code of a 1-Wire id (`28-00000a1b2c3d` → `0x28`), `None` when
/// the name is not two hex digits, a dash and a hex serial. The one rule for
/// ids: the bus scan and the `devicenames.json` check both use it.
pub fn parse_id(id: &str) -> Option<u8> {
    let (family, serial) = id.split_once('-')?;
    if serial.is_empty() || !serial.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    hex_byte(family)
}

/// Dallas/Maxim CRC-8 (polynomial x⁸+x⁵+x⁴+1, 0x31 reflected = 0x8C, initial 0).
/// A block followed by its CRC has CRC 0.
///
/// ```
/// // the ROM example of Maxim application note 27
/// assert_eq!(hxlog::sensors::w1::crc8(&[0x02, 0x1c, 0xb8, 0x01, 0, 0, 0]), 0xa2);
/// ```
pub fn crc8(bytes: &[u8]) -> u8 {
    let mut crc = 0u8;
    for &byte in bytes {
        crc ^= byte;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x8c
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// Parses a `w1_slave` file and decodes its scratchpad (see
/// [`decode_scratchpad`]); the kernel's `t=` is required but not used, as it
/// is truncated. Errors carry the quality and what was wrong, without the path.
///
/// ```
/// use hxlog::sensors::w1::parse_w1_slave;
/// let text = "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n";
/// assert_eq!(parse_w1_slave(0x28, text), Ok(23.125));
/// ```
pub fn parse_w1_slave(family: u8, text: &str) -> Result<f64, (Quality, String)> {
    if text.trim().is_empty() {
        return Err((
            Quality::Empty,
            format!("empty (the kernel gives up after repeated CRC failures; {WIRING_HINT})"),
        ));
    }
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let [line1, line2] = lines[..] else {
        return Err(garbage(
            &format!("expected 2 lines, found {}", lines.len()),
            text,
        ));
    };
    let Some((bytes1, status)) = line1.split_once(':') else {
        return Err(garbage("line 1 has no ': crc='", line1));
    };
    let Some(scratchpad) = parse_bytes(bytes1) else {
        return Err(garbage("line 1 does not start with 9 hex bytes", line1));
    };
    let (crc, verdict) = match status.split_whitespace().collect::<Vec<_>>()[..] {
        [crc, verdict] => (crc, verdict),
        _ => return Err(garbage("line 1 does not end in 'crc=XX YES|NO'", line1)),
    };
    if crc
        .strip_prefix("crc=")
        .is_none_or(|hex| hex_byte(hex).is_none())
    {
        return Err(garbage("line 1 has a malformed crc=", line1));
    }
    match verdict {
        "YES" => {}
        "NO" => {
            return Err((
                Quality::CrcNo,
                format!("{crc} NO (kernel CRC check failed; {WIRING_HINT})"),
            ));
        }
        _ => return Err(garbage("line 1 does not end in YES or NO", line1)),
    }
    let Some((bytes2, t)) = line2.split_once("t=") else {
        return Err(garbage("line 2 has no t=", line2));
    };
    if t.trim().parse::<i64>().is_err() {
        return Err(garbage("line 2 has a malformed t=", line2));
    }
    if parse_bytes(bytes2) != Some(scratchpad) {
        return Err(garbage("line 2 bytes differ from line 1", line2));
    }
    decode_scratchpad(family, &scratchpad)
}

/// Decodes a 9-byte scratchpad to °C, judging it on the way.
///
/// * all zero → [`Quality::AllZero`] (bad contact; it passes the CRC);
/// * CRC-8 of bytes 0..8 ≠ byte 8 → [`Quality::CrcMismatch`];
/// * DS18B20/DS1822/DS1825/DS28EA00: bytes 0–1 signed LE / 16, with the bits
///   undefined at the configured resolution (byte 4) cleared; raw `0x0550`
///   with byte 6 = `0x0c` → [`Quality::PowerOnReset`] (a genuine 85.0 °C has
///   another byte 6 and is valid); raw `0x07ff` → [`Quality::InsufficientPower`];
/// * DS18S20: extended resolution from COUNT_REMAIN (byte 6) and COUNT_PER_C
///   (byte 7), plain 0.5 °C when byte 7 is 0; raw `0x00aa` with byte 6 =
///   `0x0c` → [`Quality::PowerOnReset`];
/// * MAX31850 (family 3b, byte 4 bits 7…4 set): fault bit (byte 0 bit 0) →
///   [`Quality::SensorFault`] with the cause from byte 2; else 14 bits in 0.25 °C;
/// * outside the chip's [`valid_range`] → [`Quality::OutOfRange`];
/// * a family that is not a temperature sensor → [`Quality::ReadError`].
///
/// ```
/// use hxlog::sensors::w1::decode_scratchpad;
/// let sp = [0xfb, 0xff, 0x4b, 0x46, 0x7f, 0xff, 0x05, 0x10, 0xb4];
/// assert_eq!(decode_scratchpad(0x28, &sp), Ok(-0.3125));
/// ```
pub fn decode_scratchpad(family: u8, sp: &[u8; 9]) -> Result<f64, (Quality, String)> {
    if sp.iter().all(|&b| b == 0) {
        return Err((
            Quality::AllZero,
            "all-zero scratchpad (bad contact or data line held low)".to_string(),
        ));
    }
    let computed = crc8(&sp[..8]);
    if computed != sp[8] {
        return Err((
            Quality::CrcMismatch,
            format!(
                "scratchpad CRC byte is {:02x} but the bytes give {computed:02x} (corrupted transfer; {WIRING_HINT})",
                sp[8]
            ),
        ));
    }
    let Some(kind) = family_kind(family) else {
        return Err((
            Quality::ReadError,
            format!("family {family:02x} is not a temperature sensor"),
        ));
    };
    if is_max31850(family, sp) {
        return max31850_celsius(sp);
    }
    let raw = i16::from_le_bytes([sp[0], sp[1]]);
    let celsius = if family == 0x10 {
        if raw == DS18S20_POWER_ON_RAW && sp[6] == POWER_ON_BYTE6 {
            return Err(power_on_reset(kind));
        }
        ds18s20_celsius(raw, sp[6], sp[7])
    } else {
        if raw == POWER_ON_RAW && sp[6] == POWER_ON_BYTE6 {
            return Err(power_on_reset(kind));
        }
        if raw == NO_POWER_RAW {
            return Err(insufficient_power());
        }
        f64::from(mask_undefined_bits(family, raw, sp[4])) / 16.0
    };
    in_range(family, false, celsius)
}

/// MAX31850: byte 0 bit 0 is its FAULT bit, and byte 2's bits 0–2 say which
/// (open thermocouple, short to GND, short to VDD); otherwise bytes 0–1 hold
/// a signed 14-bit value in 0.25 °C steps (bits 15…2).
fn max31850_celsius(sp: &[u8; 9]) -> Decoded {
    if sp[0] & 0x01 != 0 {
        let causes: Vec<&str> = [
            (0x01, "thermocouple open (not connected or broken)"),
            (0x02, "thermocouple shorted to GND"),
            (0x04, "thermocouple shorted to VDD"),
        ]
        .into_iter()
        .filter(|(bit, _)| sp[2] & bit != 0)
        .map(|(_, why)| why)
        .collect();
        let why = if causes.is_empty() {
            "fault bit set without a cause bit".to_string()
        } else {
            causes.join(", ")
        };
        return Err((
            Quality::SensorFault,
            format!("MAX31850 reports a fault: {why}; check the thermocouple and its wiring"),
        ));
    }
    let raw = i16::from_le_bytes([sp[0], sp[1]]) >> 2;
    in_range(0x3b, true, f64::from(raw) * 0.25)
}

/// Parses a `temperature` attribute: whole millidegrees, which the kernel
/// truncates from the sensor's 1/16 °C steps; the value is snapped back to the
/// nearest 1/16 °C (`23062` → 23.0625).
///
/// It cannot tell the power-on value 85.0 °C from a genuine one, nor an
/// all-zero scratchpad from 0 °C: the reader confirms those two with `w1_slave`.
///
/// ```
/// use hxlog::sensors::w1::parse_temperature_file;
/// assert_eq!(parse_temperature_file(0x28, "23062\n"), Ok(23.0625));
/// ```
pub fn parse_temperature_file(family: u8, text: &str) -> Result<f64, (Quality, String)> {
    let text = text.trim();
    if text.is_empty() {
        return Err((
            Quality::Empty,
            format!("empty (the kernel could not read the sensor; {WIRING_HINT})"),
        ));
    }
    let Ok(milli) = text.parse::<i64>() else {
        return Err(garbage("not a whole number of millidegrees", text));
    };
    if milli == NO_POWER_MILLI {
        return Err(insufficient_power());
    }
    in_range(family, false, (milli as f64 / 62.5).round() / 16.0)
}

fn garbage(what: &str, text: &str) -> (Quality, String) {
    const MAX: usize = 80;
    let snippet: String = text.chars().take(MAX).collect();
    let more = if text.chars().count() > MAX {
        "…"
    } else {
        ""
    };
    (Quality::Garbage, format!("{what}: {snippet:?}{more}"))
}

fn power_on_reset(kind: &str) -> (Quality, String) {
    (
        Quality::PowerOnReset,
        format!(
            "{kind} power-on value 85.0 °C with byte 6 = 0c: no conversion happened (the sensor reset; check its power supply)"
        ),
    )
}

fn insufficient_power() -> (Quality, String) {
    (
        Quality::InsufficientPower,
        "raw 0x07ff (127.94 °C): not enough power to convert (parasite power needs a strong pull-up; wire VDD to 3.3 V)".to_string(),
    )
}

fn in_range(family: u8, max31850: bool, celsius: f64) -> Decoded {
    let (min, max) = valid_range(family, max31850);
    if (min..=max).contains(&celsius) {
        Ok(celsius)
    } else {
        Err((
            Quality::OutOfRange,
            format!("{celsius} °C is outside the sensor range {min}…{max} °C"),
        ))
    }
}

/// DS18S20 extended resolution: `TEMP_READ − 0.25 + (COUNT_PER_C − COUNT_REMAIN) / COUNT_PER_C`,
/// with TEMP_READ the raw value with bit 0 truncated; plain 0.5 °C steps when
/// COUNT_PER_C is 0 (or COUNT_REMAIN exceeds it, which no genuine chip reports).
fn ds18s20_celsius(raw: i16, count_remain: u8, count_per_c: u8) -> f64 {
    if count_per_c == 0 || count_remain > count_per_c {
        return f64::from(raw) / 2.0;
    }
    let temp_read = f64::from(raw >> 1);
    temp_read - 0.25 + f64::from(count_per_c - count_remain) / f64::from(count_per_c)
}

/// Clears the low bits the datasheet calls undefined at 9, 10 or 11 bits,
/// when byte 4 is a recognisable configuration register
/// (`0 R1 R0 1 1 1 1 1`; on the DS1825 the low nibble holds address pins).
fn mask_undefined_bits(family: u8, raw: i16, config: u8) -> i16 {
    let recognised = match family {
        0x3b => config & 0x90 == 0x10,
        _ => config & 0x9f == 0x1f,
    };
    if !recognised {
        return raw;
    }
    let undefined = 3 - ((config >> 5) & 0x03);
    raw & !((1i16 << undefined) - 1)
}

/// Nine space-separated hex bytes, or `None`.
fn parse_bytes(text: &str) -> Option<[u8; 9]> {
    let mut out = [0u8; 9];
    let mut words = text.split_whitespace();
    for byte in out.iter_mut() {
        *byte = hex_byte(words.next()?)?;
    }
    words.next().is_none().then_some(out)
}

/// Exactly two hex digits as a byte (no sign, unlike `from_str_radix`).
fn hex_byte(text: &str) -> Option<u8> {
    if text.len() != 2 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u8::from_str_radix(text, 16).ok()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A `w1_slave` text as the kernel writes it for scratchpad bytes 0..8,
    /// with a correct CRC byte and verdict YES.
    pub(in crate::sensors::w1) fn slave(b: [u8; 8]) -> String {
        let mut sp = [0u8; 9];
        sp[..8].copy_from_slice(&b);
        sp[8] = crc8(&b);
        slave_raw(sp, "YES")
    }

    /// A `w1_slave` text for exactly these nine bytes and verdict.
    pub(in crate::sensors::w1) fn slave_raw(sp: [u8; 9], verdict: &str) -> String {
        let hex: Vec<String> = sp.iter().map(|b| format!("{b:02x}")).collect();
        let hex = hex.join(" ");
        let milli = i32::from(i16::from_le_bytes([sp[0], sp[1]])) * 1000 / 16;
        format!(
            "{hex} : crc={:02x} {verdict}\n{hex} t={milli}\n",
            crc8(&sp[..8])
        )
    }

    /// A DS18B20 scratchpad at 12 bits for a raw value and byte 6.
    pub(in crate::sensors::w1) fn b20(raw: i16, byte6: u8) -> [u8; 8] {
        let [lo, hi] = raw.to_le_bytes();
        [lo, hi, 0x4b, 0x46, 0x7f, 0xff, byte6, 0x10]
    }

    /// A DS18S20 scratchpad for a raw value, COUNT_REMAIN and COUNT_PER_C.
    pub(in crate::sensors::w1) fn s20(raw: i16, remain: u8, per_c: u8) -> [u8; 8] {
        let [lo, hi] = raw.to_le_bytes();
        [lo, hi, 0x4b, 0x46, 0xff, 0xff, remain, per_c]
    }

    fn check(family: u8, text: &str, expected: Result<f64, Quality>) {
        let got = parse_w1_slave(family, text);
        match (&got, expected) {
            (Ok(g), Ok(x)) => assert_eq!(*g, x, "family {family:02x}, text {text:?}"),
            (Err((q, why)), Err(x)) => {
                assert_eq!(*q, x, "family {family:02x}, text {text:?}: {why}");
                assert!(!why.is_empty() && !why.ends_with('.'), "reason {why:?}");
                assert!(
                    why.starts_with(|c: char| !c.is_ascii_uppercase()) || why.starts_with("DS"),
                    "reason {why:?}"
                );
            }
            _ => panic!("family {family:02x}, text {text:?}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn w1_slave_table() {
        use Quality::{
            AllZero, CrcMismatch, CrcNo, Empty, Garbage, InsufficientPower, OutOfRange,
            PowerOnReset, ReadError,
        };
        // the kernel's own output, byte for byte
        check(
            0x28,
            "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n",
            Ok(23.125),
        );
        check(0x28, &slave(b20(0x0172, 0x0e)), Ok(23.125));
        check(0x28, &slave(b20(-5, 0x05)), Ok(-0.3125));
        check(0x28, &slave(b20(0, 0x10)), Ok(0.0));
        check(0x28, &slave(b20(0x0191, 0x0f)), Ok(25.0625));
        // 85.0 after a real conversion (byte 6 is not 0c) is a valid reading
        check(0x28, &slave(b20(0x0550, 0x10)), Ok(85.0));
        // the power-on scratchpad, as a freshly reset DS18B20 reports it
        check(
            0x28,
            "50 05 4b 46 7f ff 0c 10 1c : crc=1c YES\n50 05 4b 46 7f ff 0c 10 1c t=85000\n",
            Err(PowerOnReset),
        );
        check(0x28, &slave(b20(0x0550, 0x0c)), Err(PowerOnReset));
        check(0x28, &slave(b20(0x07ff, 0x01)), Err(InsufficientPower));
        check(0x28, &slave(b20(-880, 0x10)), Ok(-55.0));
        check(0x28, &slave(b20(2000, 0x10)), Ok(125.0));
        check(0x28, &slave(b20(2001, 0x0f)), Err(OutOfRange));
        check(0x28, &slave(b20(-881, 0x0f)), Err(OutOfRange));
        // the kernel says NO
        check(
            0x28,
            "72 01 4b 46 7f ff 0e 10 57 : crc=57 NO\n72 01 4b 46 7f ff 0e 10 57 t=23125\n",
            Err(CrcNo),
        );
        // the kernel says YES but the CRC byte does not match the bytes
        check(
            0x28,
            &slave_raw(
                [0x72, 0x01, 0x4b, 0x46, 0x7f, 0xff, 0x0e, 0x10, 0x58],
                "YES",
            ),
            Err(CrcMismatch),
        );
        check(
            0x28,
            &slave_raw(
                [0x73, 0x01, 0x4b, 0x46, 0x7f, 0xff, 0x0e, 0x10, 0x57],
                "YES",
            ),
            Err(CrcMismatch),
        );
        check(0x28, "", Err(Empty));
        check(0x28, "\n", Err(Empty));
        check(
            0x28,
            "00 00 00 00 00 00 00 00 00 : crc=00 YES\n00 00 00 00 00 00 00 00 00 t=0\n",
            Err(AllZero),
        );
        check(
            0x10,
            "00 00 00 00 00 00 00 00 00 : crc=00 YES\n00 00 00 00 00 00 00 00 00 t=0\n",
            Err(AllZero),
        );
        // garbage of every kind
        check(
            0x28,
            "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n",
            Err(Garbage),
        );
        check(
            0x28,
            "72 01 4b 46 7f ff 0e 10 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 t=23125\n",
            Err(Garbage),
        );
        check(
            0x28,
            "72 01 4b 46 7f ff 0e 10 57 00 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 00 t=23125\n",
            Err(Garbage),
        );
        check(
            0x28,
            "72 01 4b 46 7f zz 0e 10 57 : crc=57 YES\n72 01 4b 46 7f zz 0e 10 57 t=23125\n",
            Err(Garbage),
        );
        check(
            0x28,
            "72 01 4b 46 7f +f 0e 10 57 : crc=57 YES\n72 01 4b 46 7f +f 0e 10 57 t=23125\n",
            Err(Garbage),
        );
        check(
            0x28,
            "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57\n",
            Err(Garbage),
        );
        check(
            0x28,
            "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=\n",
            Err(Garbage),
        );
        check(
            0x28,
            "72 01 4b 46 7f ff 0e 10 57 : crc=57 MAYBE\n72 01 4b 46 7f ff 0e 10 57 t=23125\n",
            Err(Garbage),
        );
        check(
            0x28,
            "72 01 4b 46 7f ff 0e 10 57 : crc=5 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n",
            Err(Garbage),
        );
        check(
            0x28,
            "72 01 4b 46 7f ff 0e 10 57 crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n",
            Err(Garbage),
        );
        check(
            0x28,
            "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n50 05 4b 46 7f ff 0c 10 1c t=85000\n",
            Err(Garbage),
        );
        check(
            0x28,
            "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\nextra\n",
            Err(Garbage),
        );
        check(0x28, "hello world", Err(Garbage));
        check(0x28, "\u{0}\u{0}\u{0}", Err(Garbage));
        // DS18S20: 0.5 °C steps refined by COUNT_REMAIN / COUNT_PER_C
        check(0x10, &slave(s20(0x0032, 0x0c, 0x10)), Ok(25.0));
        check(0x10, &slave(s20(0x0032, 0x07, 0x10)), Ok(25.3125));
        check(0x10, &slave(s20(0x0033, 0x0c, 0x10)), Ok(25.0));
        check(0x10, &slave(s20(-50, 0x0a, 0x10)), Ok(-24.875));
        check(0x10, &slave(s20(-1, 0x0f, 0x10)), Ok(-1.1875));
        check(0x10, &slave(s20(0x0033, 0x07, 0x00)), Ok(25.5));
        check(0x10, &slave(s20(-1, 0x07, 0x00)), Ok(-0.5));
        check(0x10, &slave(s20(0x00aa, 0x0c, 0x10)), Err(PowerOnReset));
        check(0x10, &slave(s20(0x00aa, 0x0b, 0x10)), Ok(85.0625));
        check(0x10, &slave(s20(0x00fa, 0x0c, 0x10)), Ok(125.0));
        check(0x10, &slave(s20(0x00fb, 0x00, 0x10)), Err(OutOfRange));
        // DS1822, DS1825 and DS28EA00 decode like the DS18B20
        check(0x22, &slave(b20(0x0191, 0x0f)), Ok(25.0625));
        check(0x22, &slave(b20(-5, 0x05)), Ok(-0.3125));
        check(0x22, &slave(b20(0x0550, 0x0c)), Err(PowerOnReset));
        check(
            0x3b,
            &slave([0x91, 0x01, 0x4b, 0x46, 0x70, 0xff, 0x0f, 0x10]),
            Ok(25.0625),
        );
        check(0x42, &slave(b20(0x0191, 0x0f)), Ok(25.0625));
        // lower resolutions: the undefined low bits are cleared
        check(
            0x28,
            &slave([0x97, 0x01, 0x4b, 0x46, 0x1f, 0xff, 0x09, 0x10]),
            Ok(25.0),
        ); // 9 bits
        check(
            0x28,
            &slave([0x97, 0x01, 0x4b, 0x46, 0x3f, 0xff, 0x09, 0x10]),
            Ok(25.25),
        ); // 10 bits
        check(
            0x28,
            &slave([0x97, 0x01, 0x4b, 0x46, 0x5f, 0xff, 0x09, 0x10]),
            Ok(25.375),
        ); // 11 bits
        check(
            0x28,
            &slave([0x97, 0x01, 0x4b, 0x46, 0x7f, 0xff, 0x09, 0x10]),
            Ok(25.4375),
        ); // 12 bits
        check(
            0x28,
            &slave([0xf8, 0xff, 0x4b, 0x46, 0x1f, 0xff, 0x09, 0x10]),
            Ok(-0.5),
        ); // 9 bits, negative
        check(
            0x3b,
            &slave([0x97, 0x01, 0x4b, 0x46, 0x10, 0xff, 0x09, 0x10]),
            Ok(25.0),
        ); // DS1825 9 bits, address 0
        // not a temperature sensor
        check(0x3a, &slave(b20(0x0191, 0x0f)), Err(ReadError));
    }

    /// A MAX31850 scratchpad: 14-bit value in 0.25 °C steps (bits 15…2),
    /// the fault bit, the cause bits of byte 2, address 0 in byte 4.
    fn max31850(quarter_degrees: i16, fault: bool, causes: u8) -> [u8; 8] {
        let [lo, hi] = ((quarter_degrees << 2) | i16::from(fault)).to_le_bytes();
        [lo, hi, 0x90 | causes, 0x01, 0xf0, 0xff, 0xff, 0xff]
    }

    #[test]
    fn max31850_faults_and_range() {
        use Quality::{OutOfRange, SensorFault};
        let case = |sp: [u8; 8], expected: Result<f64, Quality>, why: &str| {
            let got = parse_w1_slave(0x3b, &slave(sp));
            match (&got, expected) {
                (Ok(g), Ok(x)) => assert_eq!(*g, x, "{sp:02x?}"),
                (Err((q, reason)), Err(x)) => {
                    assert_eq!(*q, x, "{sp:02x?}: {reason}");
                    assert!(reason.contains(why), "{sp:02x?}: {reason}");
                }
                _ => panic!("{sp:02x?}: got {got:?}, expected {expected:?}"),
            }
        };
        case(max31850(100, false, 0), Ok(25.0), "");
        case(max31850(-1, false, 0), Ok(-0.25), "");
        case(max31850(4 * 1000, false, 0), Ok(1000.0), ""); // a DS18B20 would say out of range
        case(max31850(4 * 1372, false, 0), Ok(1372.0), "");
        case(max31850(-4 * 270, false, 0), Ok(-270.0), "");
        case(max31850(-4 * 271, false, 0), Err(OutOfRange), "-270…1768");
        case(max31850(8191, false, 0), Err(OutOfRange), "2047.75 °C");
        case(max31850(100, true, 0x01), Err(SensorFault), "open");
        case(
            max31850(100, true, 0x02),
            Err(SensorFault),
            "shorted to GND",
        );
        case(
            max31850(100, true, 0x04),
            Err(SensorFault),
            "shorted to VDD",
        );
        case(max31850(0, true, 0x00), Err(SensorFault), "without a cause");
        // byte 4 with bit 7 clear is a DS1825: −55…125 °C as before
        let mut ds1825 = max31850(100, false, 0);
        ds1825[4] = 0x7f;
        case(ds1825, Ok(25.0), ""); // 400 / 16, the DS1825 scale
        ds1825[1] = 0x40; // 0x4190 / 16 = 1049 °C: out of the DS1825 range
        case(ds1825, Err(OutOfRange), "-55…125");
    }

    #[test]
    fn ranges_are_per_family() {
        for (family, milli, ok) in [
            (0x28, 125_000, true),
            (0x28, -55_000, true),
            (0x42, 85_000, true),
            (0x42, 85_062, false),
            (0x42, -40_062, false),
            (0x22, 125_000, true),
        ] {
            let got = parse_temperature_file(family, &format!("{milli}\n"));
            assert_eq!(got.is_ok(), ok, "{family:02x} {milli}: {got:?}");
        }
    }

    fn check_temperature(text: &str, expected: Result<f64, Quality>) {
        let got = parse_temperature_file(0x28, text);
        match (&got, expected) {
            (Ok(g), Ok(x)) => assert_eq!(*g, x, "text {text:?}"),
            (Err((q, why)), Err(x)) => assert_eq!(*q, x, "text {text:?}: {why}"),
            _ => panic!("text {text:?}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn temperature_file_table() {
        use Quality::{Empty, Garbage, InsufficientPower, OutOfRange};
        check_temperature("23125\n", Ok(23.125));
        check_temperature("23062\n", Ok(23.0625)); // the kernel truncated 23062.5
        check_temperature("-312\n", Ok(-0.3125));
        check_temperature("-62\n", Ok(-0.0625));
        check_temperature("0\n", Ok(0.0));
        check_temperature("85000\n", Ok(85.0)); // the reader confirms this one with w1_slave
        check_temperature("-55000\n", Ok(-55.0));
        check_temperature("125000\n", Ok(125.0));
        check_temperature("125062\n", Err(OutOfRange));
        check_temperature("-55062\n", Err(OutOfRange));
        check_temperature("127937\n", Err(InsufficientPower));
        check_temperature("", Err(Empty));
        check_temperature("\n", Err(Empty));
        check_temperature("23.125\n", Err(Garbage));
        check_temperature("t=23125\n", Err(Garbage));
    }

    #[test]
    fn crc8_vectors() {
        let check = |bytes: &[u8], expected: u8| assert_eq!(crc8(bytes), expected, "{bytes:02x?}");
        // Maxim application note 27, the ROM example
        check(&[0x02, 0x1c, 0xb8, 0x01, 0x00, 0x00, 0x00], 0xa2);
        // scratchpads the kernel accepted (crc=.. YES)
        check(&[0x72, 0x01, 0x4b, 0x46, 0x7f, 0xff, 0x0e, 0x10], 0x57);
        check(&[0x50, 0x05, 0x4b, 0x46, 0x7f, 0xff, 0x0c, 0x10], 0x1c);
        check(&[], 0x00);
        check(&[0u8; 8], 0x00);
        // a block followed by its CRC checks to 0
        check(&[0x02, 0x1c, 0xb8, 0x01, 0x00, 0x00, 0x00, 0xa2], 0x00);
        check(
            &[0x72, 0x01, 0x4b, 0x46, 0x7f, 0xff, 0x0e, 0x10, 0x57],
            0x00,
        );
    }

    #[test]
    fn ids_and_families() {
        let check = |id: &str, expected: Option<(u8, &str)>| {
            let got = parse_id(id).and_then(|f| family_kind(f).map(|k| (f, k)));
            assert_eq!(got, expected, "{id}");
        };
        check("28-00000a1b2c3d", Some((0x28, "DS18B20")));
        check("10-000802b4ba0c", Some((0x10, "DS18S20")));
        check("22-000000123456", Some((0x22, "DS1822")));
        check("3b-000000123456", Some((0x3b, "DS1825/MAX31850K")));
        check("42-000000123456", Some((0x42, "DS28EA00")));
        check("3a-000000123456", None); // DS2413 switch
        check("00-400000000000", None);
        check("w1_bus_master1", None);
        check("28-", None);
        check("28-00000a1b2c3g", None);
        check("28-00000a1b 2c3", None);
        check("+8-000000000001", None);
        check("28000000000001", None);
    }
}
