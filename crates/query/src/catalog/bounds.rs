//! What the queries of a session with a memory limit ([`super::Catalog::with_limits`], the
//! endpoint's) may build outside DataFusion's own reservations.
//!
//! DataFusion's memory pool sees what operators reserve: sorts, aggregations, join build sides.
//! It does not see the batches operators pass on, nor the arrays functions build for them:
//! `SELECT repeat('x', 100000000) FROM range(20)` built 2 GB in one projection while the pool
//! stayed empty. Three checks close most of that gap:
//!
//! - [`GuardAmplifiers`] (the last analyzer rule): a call of a function whose result can be
//!   larger than its arguments by a factor one argument chooses ([`Amplifier`]: `repeat`,
//!   `lpad`, `array_repeat`, `range`, …) is wrapped in a [`Guarded`] call. Before it builds its
//!   result for a batch, the wrapper computes that result's size from the argument values
//!   (columns as well as literals), refuses it when it is larger than the session's memory
//!   limit, and otherwise reserves it in the pool (held until the call's next batch or the end
//!   of the query) or refuses it when the pool has not that much free.
//! - The same rule refuses a literal that, repeated over one batch, would not fit in the limit
//!   (a projection turns a literal into one value per row).
//! - [`CountOutputs`] (the last physical optimizer rule): the batches that projections, joins,
//!   unnest and window operators emit are counted in the pool (each output partition holds its
//!   latest batch) and refused when the pool cannot hold them. This check comes after the batch
//!   is built: it bounds chains of steps (each step builds from counted batches) rather than
//!   one step.

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, IntervalMonthDayNanoArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, IntervalMonthDayNano, IntervalUnit, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, MemoryReservation};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, LogicalPlan, ReturnFieldArgs, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::optimizer::AnalyzerRule;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::execution_plan::CardinalityEffect;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};
use futures::StreamExt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// The operators whose output batches [`CountOutputs`] counts: those that build new values
/// (projections evaluate functions; joins, unnest and window functions replicate or accumulate
/// values). Operators that pass their input's arrays on, sorts and aggregations (which reserve
/// what they hold themselves) are not counted again.
const COUNTED_OPERATORS: [&str; 10] = [
    "ProjectionExec",
    "HashJoinExec",
    "NestedLoopJoinExec",
    "CrossJoinExec",
    "SortMergeJoinExec",
    "SymmetricHashJoinExec",
    "PiecewiseMergeJoinExec",
    "UnnestExec",
    "WindowAggExec",
    "BoundedWindowAggExec",
];

/// `bytes` for messages: `512.0 MiB`.
pub(crate) fn human(bytes: u128) -> String {
    const KIB: f64 = 1024.0;
    let b = bytes as f64;
    if b >= KIB * KIB * KIB {
        format!("{:.1} GiB", b / (KIB * KIB * KIB))
    } else if b >= KIB * KIB {
        format!("{:.1} MiB", b / (KIB * KIB))
    } else if b >= KIB {
        format!("{:.1} KiB", b / KIB)
    } else {
        format!("{bytes} bytes")
    }
}

/// `n rows` / `1 row`.
fn rows_text(n: usize) -> String {
    if n == 1 {
        "1 row".to_owned()
    } else {
        format!("{n} rows")
    }
}

fn exhausted(message: String) -> DataFusionError {
    DataFusionError::ResourcesExhausted(message)
}

/// The functions whose result size an argument multiplies, and how to bound it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Amplifier {
    /// `repeat(text, n)`: `n` copies of the text.
    Repeat,
    /// `lpad` / `rpad(text, n [, fill])`: `n` characters.
    Pad,
    /// `array_repeat(value, n)` (`list_repeat`): `n` copies of the value.
    ArrayRepeat,
    /// `range` / `generate_series([start,] stop [, step])` as a scalar (a list per row).
    Series,
    /// `array_resize(list, n [, value])` (`list_resize`): `n` elements.
    ArrayResize,
    /// `array_to_string(list, delimiter [, null])` (`array_join`, `list_to_string`): a delimiter
    /// per element.
    ArrayToString,
    /// `replace(text, from, to)`: `to` for every occurrence of `from`.
    Replace,
    /// `regexp_replace(text, pattern, to [, flags])`: `to` for every match, which can be empty.
    RegexpReplace,
}

impl Amplifier {
    fn of(name: &str) -> Option<Amplifier> {
        Some(match name {
            "repeat" => Amplifier::Repeat,
            "lpad" | "rpad" => Amplifier::Pad,
            "array_repeat" => Amplifier::ArrayRepeat,
            "range" | "generate_series" => Amplifier::Series,
            "array_resize" => Amplifier::ArrayResize,
            "array_to_string" => Amplifier::ArrayToString,
            "replace" => Amplifier::Replace,
            "regexp_replace" => Amplifier::RegexpReplace,
            _ => return None,
        })
    }

    /// At least the bytes of the result for `rows` rows of `args`, computed from the argument
    /// values without building anything. Arguments of a type the function does not take count
    /// as empty (DataFusion refuses them when the function runs).
    fn result_bytes(self, args: &[ColumnarValue], rows: usize) -> Result<u128> {
        let arg = |i: usize| args.get(i).map(Arg::of);
        // Per row: a view or an offset and a validity bit, at most.
        let overhead = 16 * rows as u128;
        let body = match self {
            Amplifier::Repeat => {
                let (Some(text), Some(n)) = (arg(0), arg(1)) else {
                    return Ok(0);
                };
                let (text, n) = (Texts::of(&text), Ints::of(&n)?);
                total(rows, args, |i| text.len(i) * count(n.get(i)))
            }
            Amplifier::Pad => {
                let (Some(text), Some(n)) = (arg(0), arg(1)) else {
                    return Ok(0);
                };
                let (text, n) = (Texts::of(&text), Ints::of(&n)?);
                let fill = arg(2).map(|f| Texts::of(&f));
                total(rows, args, |i| {
                    // `n` characters: one byte each when everything is ASCII, else up to four.
                    let ascii = text.ascii(i) && fill.as_ref().is_none_or(|f| f.ascii(i));
                    count(n.get(i)) * if ascii { 1 } else { 4 }
                })
            }
            Amplifier::ArrayRepeat => {
                let (Some(value), Some(n)) = (arg(0), arg(1)) else {
                    return Ok(0);
                };
                let (value, n) = (Sizes::of(&value)?, Ints::of(&n)?);
                total(rows, args, |i| (value.bytes(i) + 8) * count(n.get(i)))
            }
            Amplifier::Series => series_bytes(args, rows)?,
            Amplifier::ArrayResize => {
                let (Some(list), Some(n)) = (arg(0), arg(1)) else {
                    return Ok(0);
                };
                let (list, n) = (Sizes::of(&list)?, Ints::of(&n)?);
                let value = arg(2).map(|v| Sizes::of(&v)).transpose()?;
                total(rows, args, |i| {
                    let element = (list.bytes(i) / list.elements(i).max(1))
                        .max(value.as_ref().map_or(0, |v| v.bytes(i)))
                        .max(8);
                    element * count(n.get(i))
                })
            }
            Amplifier::ArrayToString => {
                let (Some(list), Some(delimiter)) = (arg(0), arg(1)) else {
                    return Ok(0);
                };
                let (list, delimiter) = (Sizes::of(&list)?, Texts::of(&delimiter));
                let null = arg(2).map(|v| Texts::of(&v));
                total(rows, args, |i| {
                    // Each element written as text (at most 32 bytes for a number, a date or a
                    // time; strings count their own bytes), a delimiter after each.
                    let per_element = 32 + delimiter.len(i) + null.as_ref().map_or(0, |n| n.len(i));
                    list.bytes(i) + list.leaves(i) * per_element
                })
            }
            Amplifier::Replace => {
                let (Some(text), Some(from), Some(to)) = (arg(0), arg(1), arg(2)) else {
                    return Ok(0);
                };
                let (text, from, to) = (Texts::of(&text), Texts::of(&from), Texts::of(&to));
                total(rows, args, |i| {
                    let len = text.len(i);
                    // Occurrences of `from` do not overlap; an empty `from` replaces nothing
                    // (as in PostgreSQL).
                    let occurrences = match from.len(i) {
                        0 => 0,
                        f => len / f,
                    };
                    len + occurrences * to.len(i)
                })
            }
            Amplifier::RegexpReplace => {
                let (Some(text), Some(to)) = (arg(0), arg(2)) else {
                    return Ok(0);
                };
                let (text, to) = (Texts::of(&text), Texts::of(&to));
                total(rows, args, |i| {
                    let len = text.len(i);
                    // At most one match per position (matches do not overlap, and can be
                    // empty); each reference to a group (`\1`, `$1`) in `to` inserts at most
                    // the match, and the matches together are at most the text.
                    let references = to.references(i);
                    len + (len + 1) * to.len(i) + references * len
                })
            }
        };
        Ok(body.saturating_add(overhead))
    }
}

/// `n` as a count of copies, characters or elements: negative and null are none.
fn count(n: Option<i128>) -> u128 {
    n.and_then(|n| u128::try_from(n).ok()).unwrap_or(0)
}

/// `per_row` summed over the rows; once times `rows` when every argument is a scalar (the
/// result is one value, which the projection then repeats per row).
fn total(rows: usize, args: &[ColumnarValue], per_row: impl Fn(usize) -> u128) -> u128 {
    if args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) {
        return per_row(0).saturating_mul(rows as u128);
    }
    (0..rows).fold(0u128, |sum, i| sum.saturating_add(per_row(i)))
}

/// `range` / `generate_series`: elements of 8 bytes (integers, timestamps; dates take 4).
fn series_bytes(args: &[ColumnarValue], rows: usize) -> Result<u128> {
    let (start, stop, step) = match args {
        [stop] => (None, stop, None),
        [start, stop] => (Some(start), stop, None),
        [start, stop, step] => (Some(start), stop, Some(step)),
        _ => return Ok(0),
    };
    let temporal = matches!(
        stop.data_type(),
        DataType::Date32 | DataType::Date64 | DataType::Timestamp(_, _)
    );
    let start = start.map(|s| Ints::of_time(&Arg::of(s))).transpose()?;
    let stop = Ints::of_time(&Arg::of(stop))?;
    let step = match step {
        Some(s) if temporal => Steps::Interval(Intervals::of(&Arg::of(s))?),
        Some(s) => Steps::Ints(Ints::of(&Arg::of(s))?),
        None => Steps::One,
    };
    Ok(total(rows, args, |i| {
        let from = start.as_ref().map_or(Some(0), |s| s.get(i));
        let (Some(from), Some(to)) = (from, stop.get(i)) else {
            return 0;
        };
        let Some(step) = step.get(i) else {
            return 0;
        };
        let span = to - from;
        // A zero step or one away from `stop` gives nothing (or DataFusion's error).
        if step == 0 || (span != 0 && (span > 0) != (step > 0)) {
            return 0;
        }
        let elements = u128::try_from(span.abs() / step.abs()).unwrap_or(0) + 1;
        elements * 8
    }))
}

/// One argument of a call.
enum Arg<'a> {
    Scalar(&'a ScalarValue),
    Array(&'a ArrayRef),
}

impl<'a> Arg<'a> {
    fn of(v: &'a ColumnarValue) -> Arg<'a> {
        match v {
            ColumnarValue::Scalar(s) => Arg::Scalar(s),
            ColumnarValue::Array(a) => Arg::Array(a),
        }
    }

    /// A one-row array of a scalar (small values only: numbers, dates, intervals).
    fn array(&self) -> Result<ArrayRef> {
        match self {
            Arg::Scalar(s) => s.to_array_of_size(1),
            Arg::Array(a) => Ok(Arc::clone(a)),
        }
    }

    fn is_scalar(&self) -> bool {
        matches!(self, Arg::Scalar(_))
    }
}

/// Integers per row (the scalar's for every row), times a factor (nanoseconds per unit of a
/// date or timestamp).
struct Ints {
    values: Int64Array,
    scalar: bool,
    factor: i128,
}

impl Ints {
    fn of(arg: &Arg<'_>) -> Result<Ints> {
        Ok(Ints {
            values: cast(&arg.array()?, &DataType::Int64)?
                .as_primitive()
                .clone(),
            scalar: arg.is_scalar(),
            factor: 1,
        })
    }

    /// Dates and timestamps as nanoseconds, integers as they are.
    fn of_time(arg: &Arg<'_>) -> Result<Ints> {
        const DAY: i128 = 86_400_000_000_000;
        let array = arg.array()?;
        let factor = match array.data_type() {
            DataType::Date32 => DAY,
            DataType::Date64 | DataType::Timestamp(TimeUnit::Millisecond, _) => 1_000_000,
            DataType::Timestamp(TimeUnit::Second, _) => 1_000_000_000,
            DataType::Timestamp(TimeUnit::Microsecond, _) => 1_000,
            _ => 1,
        };
        Ok(Ints {
            values: cast(&array, &DataType::Int64)?.as_primitive().clone(),
            scalar: arg.is_scalar(),
            factor,
        })
    }

    fn get(&self, i: usize) -> Option<i128> {
        let i = if self.scalar { 0 } else { i };
        (i < self.values.len() && self.values.is_valid(i))
            .then(|| i128::from(self.values.value(i)) * self.factor)
    }
}

/// Interval steps per row.
struct Intervals {
    values: IntervalMonthDayNanoArray,
    scalar: bool,
}

impl Intervals {
    fn of(arg: &Arg<'_>) -> Result<Intervals> {
        let array = cast(
            &arg.array()?,
            &DataType::Interval(IntervalUnit::MonthDayNano),
        )?;
        Ok(Intervals {
            values: array.as_primitive().clone(),
            scalar: arg.is_scalar(),
        })
    }

    /// The shortest the step can be, in nanoseconds (months of 28 days, days of 23 hours); a
    /// step whose parts have different signs counts as a nanosecond.
    fn get(&self, i: usize) -> Option<i128> {
        const HOUR: i128 = 3_600_000_000_000;
        let i = if self.scalar { 0 } else { i };
        if i >= self.values.len() || self.values.is_null(i) {
            return None;
        }
        let IntervalMonthDayNano {
            months,
            days,
            nanoseconds,
        } = self.values.value(i);
        let (m, d, n) = (
            i128::from(months),
            i128::from(days),
            i128::from(nanoseconds),
        );
        let shortest = |m: i128, d: i128, n: i128| m * 28 * 24 * HOUR + d * 23 * HOUR + n;
        Some(if m >= 0 && d >= 0 && n >= 0 {
            shortest(m, d, n)
        } else if m <= 0 && d <= 0 && n <= 0 {
            -shortest(-m, -d, -n)
        } else {
            1
        })
    }
}

enum Steps {
    One,
    Ints(Ints),
    Interval(Intervals),
}

impl Steps {
    fn get(&self, i: usize) -> Option<i128> {
        match self {
            Steps::One => Some(1),
            Steps::Ints(v) => v.get(i),
            Steps::Interval(v) => v.get(i),
        }
    }
}

/// Text per row: lengths in bytes, whether ASCII, group references. Never copies the text.
enum Texts<'a> {
    Scalar(Option<&'a str>),
    Array(&'a ArrayRef),
}

impl<'a> Texts<'a> {
    fn of(arg: &Arg<'a>) -> Texts<'a> {
        match arg {
            Arg::Scalar(
                ScalarValue::Utf8(s) | ScalarValue::LargeUtf8(s) | ScalarValue::Utf8View(s),
            ) => Texts::Scalar(s.as_deref()),
            Arg::Scalar(_) => Texts::Scalar(None),
            Arg::Array(a) => Texts::Array(a),
        }
    }

    fn value(&self, i: usize) -> Option<&'a str> {
        match self {
            Texts::Scalar(s) => *s,
            Texts::Array(a) if i < a.len() && a.is_valid(i) => match a.data_type() {
                DataType::Utf8 => Some(a.as_string::<i32>().value(i)),
                DataType::LargeUtf8 => Some(a.as_string::<i64>().value(i)),
                DataType::Utf8View => Some(a.as_string_view().value(i)),
                _ => None,
            },
            Texts::Array(_) => None,
        }
    }

    fn len(&self, i: usize) -> u128 {
        self.value(i).map_or(0, |s| s.len() as u128)
    }

    fn ascii(&self, i: usize) -> bool {
        self.value(i).is_none_or(str::is_ascii)
    }

    /// Group references of a replacement (`\1`, `$1`, `${name}`): at most its `\` and `$`.
    fn references(&self, i: usize) -> u128 {
        self.value(i).map_or(0, |s| {
            s.bytes().filter(|b| matches!(b, b'\\' | b'$')).count() as u128
        })
    }
}

/// Any value per row: its bytes, and for lists their elements.
enum Sizes<'a> {
    Scalar(ArrayRef),
    Array(&'a ArrayRef),
}

impl<'a> Sizes<'a> {
    fn of(arg: &Arg<'a>) -> Result<Sizes<'a>> {
        Ok(match arg {
            Arg::Scalar(s) => Sizes::Scalar(s.to_array_of_size(1)?),
            Arg::Array(a) => Sizes::Array(a),
        })
    }

    fn row(&self, i: usize) -> Option<ArrayRef> {
        match self {
            Sizes::Scalar(a) => Some(a.slice(0, 1)),
            Sizes::Array(a) if i < a.len() => Some(a.slice(i, 1)),
            Sizes::Array(_) => None,
        }
    }

    fn bytes(&self, i: usize) -> u128 {
        self.row(i).map_or(0, |r| array_bytes(r.as_ref()) as u128)
    }

    /// Elements of the list in row `i` (1 for a value that is not a list).
    fn elements(&self, i: usize) -> u128 {
        self.row(i).map_or(0, |r| match r.data_type() {
            DataType::List(_) => r.as_list::<i32>().value_length(0).max(0) as u128,
            DataType::LargeList(_) => r.as_list::<i64>().value_length(0).max(0) as u128,
            DataType::FixedSizeList(_, n) => (*n).max(0) as u128,
            _ => 1,
        })
    }

    /// Values in row `i`, counting through nested lists.
    fn leaves(&self, i: usize) -> u128 {
        self.row(i).map_or(0, |r| leaf_count(r.as_ref()) as u128)
    }
}

/// Values in a (sliced) array, counting through nested lists.
fn leaf_count(a: &dyn Array) -> usize {
    match a.data_type() {
        DataType::List(_) => {
            let l = a.as_list::<i32>();
            let (first, last) = (l.value_offsets()[0], l.value_offsets()[l.len()]);
            let child = l.values().slice(first as usize, (last - first) as usize);
            leaf_count(child.as_ref())
        }
        DataType::LargeList(_) => {
            let l = a.as_list::<i64>();
            let (first, last) = (l.value_offsets()[0], l.value_offsets()[l.len()]);
            let child = l.values().slice(first as usize, (last - first) as usize);
            leaf_count(child.as_ref())
        }
        _ => a.len(),
    }
}

/// The bytes of the rows of a (possibly sliced) array: a slice of a larger array counts its own
/// rows, not the buffers it shares (results are often slices of one large array), and string
/// views count the strings they point at.
pub(crate) fn array_bytes(a: &dyn Array) -> usize {
    let nulls = a.nulls().map_or(0, |n| n.len().div_ceil(8));
    match a.data_type() {
        DataType::Utf8View | DataType::BinaryView => {
            let views = match a.data_type() {
                DataType::Utf8View => a.as_string_view().views().clone(),
                _ => a.as_binary_view().views().clone(),
            };
            // A view holds strings of up to 12 bytes inline; longer ones point into a buffer.
            let long: usize = views
                .iter()
                .map(|v| *v as u32 as usize)
                .filter(|len| *len > 12)
                .sum();
            nulls + 16 * a.len() + long
        }
        DataType::List(_) => {
            let l = a.as_list::<i32>();
            let (first, last) = (l.value_offsets()[0], l.value_offsets()[l.len()]);
            let child = l.values().slice(first as usize, (last - first) as usize);
            nulls + 4 * (a.len() + 1) + array_bytes(child.as_ref())
        }
        DataType::LargeList(_) => {
            let l = a.as_list::<i64>();
            let (first, last) = (l.value_offsets()[0], l.value_offsets()[l.len()]);
            let child = l.values().slice(first as usize, (last - first) as usize);
            nulls + 8 * (a.len() + 1) + array_bytes(child.as_ref())
        }
        DataType::FixedSizeList(_, n) => {
            let l = a.as_fixed_size_list();
            let n = usize::try_from(*n).unwrap_or(0);
            let child = l.values().slice(l.offset() * n, l.len() * n);
            nulls + array_bytes(child.as_ref())
        }
        DataType::Struct(_) => {
            nulls
                + a.as_struct()
                    .columns()
                    .iter()
                    .map(|c| array_bytes(c.as_ref()))
                    .sum::<usize>()
        }
        _ => a
            .to_data()
            .get_slice_memory_size()
            .unwrap_or_else(|_| a.get_array_memory_size()),
    }
}

/// The bytes of a batch's rows ([`array_bytes`] of each column).
pub(crate) fn batch_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| array_bytes(c.as_ref()))
        .sum()
}

/// A call of an [`Amplifier`] that checks its result's size before building it. One per call
/// site and query ([`GuardAmplifiers`] makes them), so that its reservation is the query's.
#[derive(Debug)]
pub(crate) struct Guarded {
    inner: Arc<ScalarUDF>,
    kind: Amplifier,
    /// The inner function's, volatile: DataFusion folds calls of immutable functions with
    /// literal arguments into a literal while planning, which the projection then repeats per
    /// row without asking the function again.
    signature: Signature,
    limit: usize,
    /// The latest result's share of the pool, held until the next batch or the end of the
    /// query (while the result travels up the plan), so that several calls of one query count
    /// together.
    held: MemoryReservation,
}

impl PartialEq for Guarded {
    fn eq(&self, other: &Self) -> bool {
        // As the functions they wrap: the same call in two places is the same expression.
        self.inner == other.inner
    }
}

impl Eq for Guarded {}

impl Hash for Guarded {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.inner.hash(state);
    }
}

impl ScalarUDFImpl for Guarded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        self.inner.inner().schema_name(args)
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(
        &self,
        args: ReturnFieldArgs,
    ) -> Result<datafusion::arrow::datatypes::FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn short_circuits(&self) -> bool {
        self.inner.short_circuits()
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let name = self.inner.name();
        let bytes = self.kind.result_bytes(&args.args, rows)?;
        if bytes > self.limit as u128 {
            return Err(exhausted(format!(
                "{name}() would build {} for {}, more than the endpoint's memory limit of {} \
                 (results of {name} are checked before they are built); use a smaller count or \
                 length, or fewer rows",
                human(bytes),
                rows_text(rows),
                human(self.limit as u128)
            )));
        }
        // The previous batch's share (its result has gone up the plan by now) is replaced by
        // this one's.
        if self
            .held
            .try_resize(usize::try_from(bytes).unwrap_or(usize::MAX))
            .is_err()
        {
            return Err(exhausted(format!(
                "{name}() would build {} for {}, and the endpoint's memory (limit {}) has not \
                 that much free now; use a smaller count or length, fewer rows, or try again \
                 when fewer queries run",
                human(bytes),
                rows_text(rows),
                human(self.limit as u128)
            )));
        }
        let result = self.inner.invoke_with_args(args)?;
        Ok(result)
    }
}

/// The analyzer rule that wraps calls of [`Amplifier`]s in [`Guarded`] calls and refuses
/// literals too large to repeat over a batch. Registered last, after type coercion, so that
/// the arguments have their final types.
#[derive(Debug)]
pub(crate) struct GuardAmplifiers {
    pub(crate) pool: Arc<dyn MemoryPool>,
    pub(crate) limit: usize,
}

impl GuardAmplifiers {
    fn rewrite(&self, e: Expr, batch_size: usize) -> Result<Transformed<Expr>> {
        match e {
            Expr::Literal(ref value, _) => {
                // A projection repeats a literal per row: one of a few kilobytes is fine, one
                // the size of the limit over a batch is not (the text of the query sets it).
                let bytes = (value.size() as u128).saturating_mul(batch_size as u128);
                if value.size() > 1024 && bytes > self.limit as u128 {
                    return Err(exhausted(format!(
                        "a literal of {} in the query would take {} repeated over a batch of \
                         {batch_size} rows, more than the endpoint's memory limit of {}",
                        human(value.size() as u128),
                        human(bytes),
                        human(self.limit as u128)
                    )));
                }
                Ok(Transformed::no(e))
            }
            Expr::ScalarFunction(ScalarFunction { func, args })
                if !func.inner().is::<Guarded>() =>
            {
                let Some(kind) = Amplifier::of(func.name()) else {
                    return Ok(Transformed::no(Expr::ScalarFunction(ScalarFunction {
                        func,
                        args,
                    })));
                };
                let signature = Signature {
                    volatility: Volatility::Volatile,
                    ..func.signature().clone()
                };
                let guarded = Guarded {
                    held: MemoryConsumer::new(format!("{}() results", func.name()))
                        .register(&self.pool),
                    inner: func,
                    kind,
                    signature,
                    limit: self.limit,
                };
                Ok(Transformed::yes(Expr::ScalarFunction(ScalarFunction {
                    func: Arc::new(ScalarUDF::new_from_impl(guarded)),
                    args,
                })))
            }
            other => Ok(Transformed::no(other)),
        }
    }
}

impl AnalyzerRule for GuardAmplifiers {
    fn analyze(&self, plan: LogicalPlan, config: &ConfigOptions) -> Result<LogicalPlan> {
        let batch_size = config.execution.batch_size.get();
        plan.transform_up_with_subqueries(|node| {
            node.map_expressions(|e| e.transform_up(|e| self.rewrite(e, batch_size)))
        })
        .data()
    }

    fn name(&self) -> &str {
        "authwatch_guard_amplifiers"
    }
}

/// The physical optimizer rule that counts the output of [`COUNTED_OPERATORS`] in the pool
/// ([`CountedOutput`]). Registered last: the other rules see the plan without the wrappers.
#[derive(Debug)]
pub(crate) struct CountOutputs;

impl PhysicalOptimizerRule for CountOutputs {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if COUNTED_OPERATORS.contains(&node.name()) {
                Ok(Transformed::yes(
                    Arc::new(CountedOutput { input: node }) as Arc<dyn ExecutionPlan>
                ))
            } else {
                Ok(Transformed::no(node))
            }
        })
        .data()
    }

    fn name(&self) -> &str {
        "authwatch_count_outputs"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// An operator whose output batches are counted in the memory pool: each partition holds the
/// bytes of its latest batch ([`batch_bytes`]), and a batch the pool cannot hold ends the
/// query with a resources-exhausted error.
#[derive(Debug)]
pub(crate) struct CountedOutput {
    input: Arc<dyn ExecutionPlan>,
}

impl DisplayAs for CountedOutput {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CountedOutput: {} batches in the memory pool",
            self.input.name()
        )
    }
}

impl ExecutionPlan for CountedOutput {
    fn name(&self) -> &str {
        "CountedOutput"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match <[_; 1]>::try_from(children) {
            Ok([input]) => Ok(Arc::new(CountedOutput { input })),
            Err(children) => Err(DataFusionError::Internal(format!(
                "CountedOutput takes one input, not {}",
                children.len()
            ))),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, Arc::clone(&context))?;
        let schema = input.schema();
        let operator = self.input.name().to_owned();
        let reservation = MemoryConsumer::new(format!("{operator}[{partition}] output"))
            .register(context.memory_pool());
        let limit = context.memory_pool().memory_limit();
        let counted = input.map(move |batch| {
            let batch = batch?;
            let bytes = batch_bytes(&batch);
            if reservation.try_resize(bytes).is_err() {
                let limit = match limit {
                    datafusion::execution::memory_pool::MemoryLimit::Finite(n) => {
                        format!(" (limit {})", human(n as u128))
                    }
                    _ => String::new(),
                };
                return Err(exhausted(format!(
                    "{operator} built a batch of {} taking {}, more than the endpoint's \
                     memory{limit} has free; add a LIMIT, select fewer or narrower columns, or \
                     make the values smaller",
                    rows_text(batch.num_rows()),
                    human(bytes as u128)
                )));
            }
            Ok(batch)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, counted)))
    }

    fn cardinality_effect(&self) -> CardinalityEffect {
        CardinalityEffect::Equal
    }
}
