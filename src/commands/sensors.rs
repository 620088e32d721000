//! `hxlog sensors`: every 1-Wire temperature sensor on the bus with a current
//! reading or the reason there is none (like `w1thermsensor all`).

use std::process::ExitCode;

use anyhow::Context;
use serde_json::json;

use crate::config::Config;
use crate::sensors::w1::W1Bus;

/// Lists the bus.
pub fn sensors(config: &Config, as_json: bool) -> anyhow::Result<ExitCode> {
    let root = &config.sensors.w1_root;
    if !root.exists() {
        let msg = format!(
            "no 1-Wire bus at {}: enable it (dtoverlay=w1-gpio in /boot/firmware/config.txt, then reboot) or run scripts/w1_diagnostic.sh{}",
            root.display(),
            if config.effective_source() == crate::sample::Source::Mock {
                "; samples are simulated (mock) meanwhile"
            } else {
                ""
            }
        );
        if as_json {
            println!(
                "{}",
                json!({"w1_root": root, "present": false, "sensors": [], "error": msg})
            );
        } else {
            eprintln!("hxlog: {msg}");
        }
        return Ok(ExitCode::from(super::EXIT_FAILURE));
    }
    let bus = W1Bus::new(&config.sensors);
    let scan = bus
        .scan()
        .with_context(|| format!("cannot list {}", root.display()))?;
    let ids: Vec<&str> = scan.sensors.iter().map(|s| s.id.as_str()).collect();
    let readings = bus.read_sensors(&ids);
    if as_json {
        let list: Vec<_> = scan
            .sensors
            .iter()
            .zip(&readings)
            .map(|(s, r)| {
                let offset = s
                    .role
                    .as_deref()
                    .map(|role| config.sensors.offset(role, &s.id))
                    .unwrap_or(0.0);
                json!({
                    "id": s.id,
                    "family": format!("{:02x}", s.family),
                    "type": s.kind,
                    "role": s.role,
                    "ext_power": s.ext_power,
                    "resolution": s.resolution,
                    "celsius_raw": r.as_ref().ok(),
                    "calibration_offset": offset,
                    "quality": match r { Ok(_) => "ok".to_string(), Err((q, _)) => q.to_string() },
                    "reason": r.as_ref().err().map(|(_, why)| why),
                })
            })
            .collect();
        let out = json!({
            "w1_root": root,
            "present": true,
            "sensors": list,
            "phantoms": scan.phantoms,
            "masters": scan.masters.iter().map(|m| json!({"name": m.name, "slave_count": m.slave_count, "bulk_read": m.bulk_read})).collect::<Vec<_>>(),
            "missing_mapped": scan.missing_mapped.iter().map(|(r, i)| json!({"role": r, "id": i})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        if scan.sensors.is_empty() {
            println!(
                "no temperature sensors on {} (check wiring and the 4.7 kΩ pull-up; run scripts/w1_diagnostic.sh)",
                root.display()
            );
        }
        println!(
            "{:<18} {:<18} {:<5} {:<9} reading",
            "id", "type", "role", "power"
        );
        for (s, r) in scan.sensors.iter().zip(&readings) {
            let power = match s.ext_power {
                Some(true) => "external",
                Some(false) => "parasite",
                None => "?",
            };
            let value = match r {
                Ok(c) => format!("{c:.4} °C"),
                Err((q, why)) => format!("MISSING {q}: {why}"),
            };
            println!(
                "{:<18} {:<18} {:<5} {:<9} {value}",
                s.id,
                s.kind,
                s.role.as_deref().unwrap_or("-"),
                power
            );
        }
        for (role, id) in &scan.missing_mapped {
            println!(
                "{id:<18} {:<18} {role:<5} {:<9} MISSING not_found: mapped in devicenames.json but not on the bus",
                "?", "-"
            );
        }
        if !scan.phantoms.is_empty() {
            println!(
                "warning: {} phantom device(s) {:?}: bus noise or a bad contact; run scripts/w1_bus_recovery.sh",
                scan.phantoms.len(),
                scan.phantoms
            );
        }
    }
    let trouble = !scan.phantoms.is_empty()
        || !scan.missing_mapped.is_empty()
        || readings.iter().any(|r| r.is_err());
    Ok(if trouble {
        ExitCode::from(super::EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    })
}
