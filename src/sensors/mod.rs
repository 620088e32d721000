//! (interim: the real module lands from the sensors branch)
use std::collections::BTreeMap;
use std::path::PathBuf;
/// What the sensor layer needs to know.
#[derive(Debug, Clone)]
pub struct SensorSettings {
    /// root
    pub w1_root: PathBuf,
    /// mapping
    pub mapping: Vec<(String, String)>,
    /// calibration
    pub calibration: BTreeMap<String, f64>,
    /// retries
    pub retries: u32,
    /// bulk
    pub bulk_read: bool,
}
