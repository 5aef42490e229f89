//! Functions analysts need beyond DataFusion's own: geo distance and window helpers.

use datafusion::arrow::array::{Array, ArrayRef, Float64Array, Int64Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result as DfResult, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;
use std::sync::Arc;

/// Registers `haversine_km`, `time_bucket` and `duration_ms` on a session, and `count` with a
/// groups accumulator for `count(DISTINCT string)` ([`crate::DistinctCount`]).
pub fn register_udfs(ctx: &SessionContext) {
    crate::count_distinct::register(ctx);
    ctx.register_udf(ScalarUDF::from(Haversine::new()));
    ctx.register_udf(ScalarUDF::from(TimeBucket::new()));
    ctx.register_udf(ScalarUDF::from(DurationMs::new()));
}

/// Great-circle distance in km between two points given in degrees.
pub(crate) fn haversine(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    const EARTH_RADIUS_KM: f64 = 6371.0088;
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = (lat2 - lat1).to_radians();
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * a.sqrt().atan2((1.0 - a).sqrt())
}

/// `haversine_km(lat1, lon1, lat2, lon2)`: distance in km; NULL when any input is NULL.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Haversine {
    signature: Signature,
}

impl Haversine {
    fn new() -> Self {
        Haversine {
            signature: Signature::uniform(
                4,
                vec![
                    DataType::Float64,
                    DataType::Float32,
                    DataType::Int64,
                    DataType::Int32,
                ],
                Volatility::Immutable,
            ),
        }
    }
}

fn as_f64(a: &ArrayRef) -> DfResult<Float64Array> {
    let c = cast(a, &DataType::Float64)?;
    Ok(c.as_any()
        .downcast_ref::<Float64Array>()
        .cloned()
        .unwrap_or_else(|| Float64Array::from(vec![None; a.len()])))
}

fn as_i64(a: &ArrayRef) -> DfResult<Int64Array> {
    let c = cast(a, &DataType::Int64)?;
    Ok(c.as_any()
        .downcast_ref::<Int64Array>()
        .cloned()
        .unwrap_or_else(|| Int64Array::from(vec![None; a.len()])))
}

impl ScalarUDFImpl for Haversine {
    fn name(&self) -> &str {
        "haversine_km"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Float64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let [a, b, c, d] = arrays.as_slice() else {
            return exec_err!("haversine_km takes 4 arguments: lat1, lon1, lat2, lon2");
        };
        let (a, b, c, d) = (as_f64(a)?, as_f64(b)?, as_f64(c)?, as_f64(d)?);
        let out: Float64Array = (0..a.len())
            .map(|i| {
                if a.is_null(i) || b.is_null(i) || c.is_null(i) || d.is_null(i) {
                    None
                } else {
                    Some(haversine(a.value(i), b.value(i), c.value(i), d.value(i)))
                }
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// Parses a duration such as `15m`, `1h`, `90s`, `2d`, `500ms` into milliseconds.
pub(crate) fn duration_text_ms(text: &str) -> Option<i64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = text.split_at(split);
    let n: i64 = num.parse().ok()?;
    let unit_ms = match unit.trim() {
        "ms" => 1,
        "s" | "sec" | "secs" => 1000,
        "m" | "min" | "mins" => 60_000,
        "h" | "hour" | "hours" => 3_600_000,
        "d" | "day" | "days" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(unit_ms).filter(|ms| *ms > 0)
}

/// The bucket width argument: a duration text (`'15m'`) or milliseconds.
fn width_ms(arg: &ColumnarValue) -> DfResult<i64> {
    let bad = || {
        plan_err!(
            "time_bucket: the width must be a constant duration such as '15m' or a number of milliseconds"
        )
    };
    match arg {
        ColumnarValue::Scalar(
            ScalarValue::Utf8(Some(t))
            | ScalarValue::LargeUtf8(Some(t))
            | ScalarValue::Utf8View(Some(t)),
        ) => match duration_text_ms(t) {
            Some(ms) => Ok(ms),
            None => plan_err!("time_bucket: bad width {t:?}; use e.g. '30s', '15m', '1h', '1d'"),
        },
        ColumnarValue::Scalar(s) => match s.cast_to(&DataType::Int64)? {
            ScalarValue::Int64(Some(ms)) if ms > 0 => Ok(ms),
            _ => bad(),
        },
        ColumnarValue::Array(a) => {
            // A column of widths: accepted only when it is one constant repeated.
            let strings = cast(a, &DataType::Utf8)?;
            let s = strings.as_any().downcast_ref::<StringArray>();
            match s.filter(|s| !s.is_empty() && !s.is_null(0)) {
                Some(s) => match duration_text_ms(s.value(0)).or_else(|| s.value(0).parse().ok()) {
                    Some(ms) if ms > 0 => Ok(ms),
                    _ => bad(),
                },
                None => bad(),
            }
        }
    }
}

/// `time_bucket(width, time_ms)`: the start (ms) of the aligned bucket (UTC epoch) holding
/// `time_ms` — the tumbling window of an event, e.g. `time_bucket('15m', time)`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct TimeBucket {
    signature: Signature,
}

impl TimeBucket {
    fn new() -> Self {
        TimeBucket {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for TimeBucket {
    fn name(&self) -> &str {
        "time_bucket"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Int64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let [width, time] = args.args.as_slice() else {
            return exec_err!("time_bucket takes 2 arguments: width, time_ms");
        };
        let width = width_ms(width)?;
        let times = match time {
            ColumnarValue::Array(a) => as_i64(a)?,
            ColumnarValue::Scalar(s) => as_i64(&s.to_array_of_size(1)?)?,
        };
        let out: Int64Array = times
            .iter()
            .map(|t| t.map(|t| t - t.rem_euclid(width)))
            .collect();
        match time {
            ColumnarValue::Scalar(_) => {
                Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?))
            }
            ColumnarValue::Array(_) => Ok(ColumnarValue::Array(Arc::new(out))),
        }
    }
}

/// `duration_ms('15m')`: a duration text in milliseconds, for comparisons with `time`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct DurationMs {
    signature: Signature,
}

impl DurationMs {
    fn new() -> Self {
        DurationMs {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for DurationMs {
    fn name(&self) -> &str {
        "duration_ms"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Int64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let [arg] = args.args.as_slice() else {
            return exec_err!("duration_ms takes 1 argument, e.g. duration_ms('15m')");
        };
        Ok(ColumnarValue::Scalar(ScalarValue::Int64(Some(width_ms(
            arg,
        )?))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn haversine_tokyo_osaka_is_about_400_km() {
        let d = haversine(35.6762, 139.6503, 34.6937, 135.5023);
        assert!((390.0..410.0).contains(&d), "{d}");
        assert!(haversine(10.0, 10.0, 10.0, 10.0).abs() < 1e-9);
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(duration_text_ms("15m"), Some(900_000));
        assert_eq!(duration_text_ms("1h"), Some(3_600_000));
        assert_eq!(duration_text_ms("500ms"), Some(500));
        assert_eq!(duration_text_ms("soon"), None);
        assert_eq!(duration_text_ms("0s"), None);
    }
}
