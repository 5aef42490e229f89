//! Aggregation on interned keys: dictionary columns on their codes, and one string-view key
//! through a table that prefetches.
//!
//! **Dictionary keys.** The archive stores enumerations (`outcome`, `activity`, `factor`,
//! `reason`, …) as Arrow dictionaries, and analysts group by them all the time (`GROUP BY
//! outcome`, `GROUP BY activity, outcome`). DataFusion 55 has no group-values implementation for
//! dictionary keys: it hydrates every row's strings into the row format, hashes and compares
//! them (`GroupValuesRows`), which made `GROUP BY outcome` over 10M archived events 2–3× slower
//! than DuckDB. Upstream work on this is open (apache/datafusion#7647, #23993, #24822). The
//! operator gives each *distinct dictionary value* of a key column a dense id once per
//! dictionary (not per row), maps the rows' codes to ids with one array lookup per row, and
//! pairs the ids of several keys through a table of packed integers.
//!
//! **One string-view key, first stage.** Grouping by a column of hundreds of thousands of
//! distinct strings (`GROUP BY "user".name`) is bound by memory latency: DataFusion's table
//! (`GroupValuesBytesView`) probes row after row and each probe misses the cache. The first
//! stage of such a group-by interns the key with [`ViewInterner`], which prefetches the slot a
//! row a few places ahead will probe (see `view_intern.rs`). A final or single stage keeps
//! DataFusion's operator, which can spill; the first stage cannot need to: like DataFusion's,
//! it emits what it has and starts again when its memory is refused, and passes rows on as
//! states when its groups are nearly as many as its rows (the
//! `skip_partial_aggregation_probe_*` options).
//!
//! [`InternedAggregation`] is a physical optimizer rule that replaces an [`AggregateExec`] of
//! either kind with an [`InternedAggregateExec`]. That operator feeds the same
//! [`GroupsAccumulator`]s DataFusion would use (updating them in a first stage, merging their
//! states in a later one). Output schema, partitioning and ordering requirements are the
//! replaced node's, so the rest of the plan is unchanged. This module can go when a DataFusion
//! release aggregates dictionaries natively and prefetches its string probes.
//!
//! Anything else (other keys, grouping sets, aggregates without a groups accumulator, ordered
//! input, a pushed-down limit, dynamic filters) keeps DataFusion's own operator.
//!
//! The dictionary path suits dictionaries of few values. Parquet writes a dictionary per column
//! chunk, so a key of hundreds of thousands of values (user names) would be re-interned for
//! every row group, one cold hash probe per value; measured on the 10M-event archive that was
//! slower than DataFusion's per-row hashing of plain strings, which is why such columns stay
//! strings in the archive (see docs/SQL.md).
//!
//! The dictionary path does not spill either: its groups are the distinct combinations of
//! enumeration values. Its memory is reserved from the session's pool like any operator's, so
//! under a memory limit a refusal in a later stage fails the query with DataFusion's
//! resources-exhausted error rather than going unaccounted.

use datafusion::arrow::array::ArrayData;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, DictionaryArray, Int32Array, RecordBatch,
};
use datafusion::arrow::compute::{cast, concat};
use datafusion::arrow::datatypes::{DataType, Int32Type, SchemaRef};
use datafusion::arrow::row::{Row, RowConverter, Rows, SortField};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result, Statistics, internal_datafusion_err};
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{
    AggregateExec, AggregateInputMode, AggregateMode, AggregateOutputMode, aggregate_expressions,
    evaluate_many,
};
use datafusion::physical_plan::execution_plan::{CardinalityEffect, ReplaceChildrenOptions};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet, RecordOutput,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildStats, DisplayAs, DisplayFormatType, ExecutionPlan, InputDistributionRequirements,
    InputOrderMode, PlanProperties, SendableRecordBatchStream, StatisticsArgs,
};
use futures::StreamExt;
use hashbrown::HashTable;
use std::collections::VecDeque;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::Arc;

use crate::view_intern::ViewInterner;

/// Physical optimizer rule: use [`InternedAggregateExec`] where it applies (see the module
/// documentation). Register it after DataFusion's own rules, so that they see (and reshape)
/// the ordinary [`AggregateExec`] first.
#[derive(Debug, Default)]
pub struct InternedAggregation;

impl PhysicalOptimizerRule for InternedAggregation {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(agg) = node.as_ref().downcast_ref::<AggregateExec>() else {
                return Ok(Transformed::no(node));
            };
            match InternedAggregateExec::try_new(agg, Arc::clone(&node))? {
                Some(exec) => Ok(Transformed::yes(Arc::new(exec) as Arc<dyn ExecutionPlan>)),
                None => Ok(Transformed::no(node)),
            }
        })
        .data()
    }

    fn name(&self) -> &str {
        "authwatch_interned_aggregation"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// An [`AggregateExec`] grouped by dictionary columns only (computed on the dictionary codes),
/// or the first stage of one grouped by one string-view column. Built by
/// [`InternedAggregation`].
#[derive(Debug)]
pub struct InternedAggregateExec {
    /// The replaced node: properties, requirements and statistics are its.
    inner: Arc<dyn ExecutionPlan>,
    mode: AggregateMode,
    /// The group keys (all dictionary columns, or one string-view column) and their output
    /// names.
    group_by: Vec<(Arc<dyn PhysicalExpr>, String)>,
    /// Types of the group keys: dictionary keys' output columns are cast back to them.
    group_types: Vec<DataType>,
    aggr_expr: Vec<Arc<AggregateFunctionExpr>>,
    arguments: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    metrics: ExecutionPlanMetricsSet,
}

impl InternedAggregateExec {
    /// The replacement for `agg` (whose plan node is `node`), or `None` when it does not apply.
    fn try_new(
        agg: &AggregateExec,
        node: Arc<dyn ExecutionPlan>,
    ) -> Result<Option<InternedAggregateExec>> {
        let group_by = agg.group_expr();
        if !group_by.is_single()
            || group_by.expr().is_empty()
            || agg.limit_options().is_some()
            || !agg.dynamic_expressions_produced().is_empty()
            || *agg.input_order_mode() != InputOrderMode::Linear
            || !agg
                .aggr_expr()
                .iter()
                .all(|a| a.groups_accumulator_supported())
        {
            return Ok(None);
        }
        // The child's schema: `AggregateExec::input_schema` is the first stage's input, which
        // a later stage's keys (columns of the partial results) do not index.
        let input_schema = agg.input().schema();
        let group_types = group_by
            .expr()
            .iter()
            .map(|(expr, _)| expr.data_type(&input_schema))
            .collect::<Result<Vec<_>>>()?;
        let dictionaries = group_types
            .iter()
            .all(|t| matches!(t, DataType::Dictionary(_, _)));
        // One view key, in the first of two stages only: a final or single stage spills under
        // memory pressure in DataFusion's operator, which this one does not.
        let one_view = matches!(
            group_types.as_slice(),
            [DataType::Utf8View | DataType::BinaryView]
        ) && *agg.mode() == AggregateMode::Partial;
        if !dictionaries && !one_view {
            return Ok(None);
        }
        let arguments =
            aggregate_expressions(agg.aggr_expr(), agg.mode(), group_by.num_group_exprs())?;
        Ok(Some(InternedAggregateExec {
            inner: node,
            mode: *agg.mode(),
            group_by: group_by.expr().to_vec(),
            group_types,
            aggr_expr: agg.aggr_expr().to_vec(),
            arguments,
            // A later stage merges states: the planner passes it the first stage's filters,
            // which were applied there (DataFusion's own operator ignores them when merging).
            filters: match agg.mode().input_mode() {
                AggregateInputMode::Raw => agg.filter_expr().to_vec(),
                AggregateInputMode::Partial => vec![None; agg.aggr_expr().len()],
            },
            metrics: ExecutionPlanMetricsSet::new(),
        }))
    }

    fn input(&self) -> Result<&Arc<dyn ExecutionPlan>> {
        self.inner
            .children()
            .first()
            .copied()
            .ok_or_else(|| internal_datafusion_err!("aggregate without an input"))
    }
}

impl DisplayAs for InternedAggregateExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let aggr: Vec<&str> = self.aggr_expr.iter().map(|a| a.name()).collect();
        let keys: Vec<String> = self
            .group_by
            .iter()
            .map(|(expr, name)| format!("{expr} as {name}"))
            .collect();
        write!(
            f,
            "InternedAggregateExec: mode={:?}, gby=[{}], aggr=[{}]",
            self.mode,
            keys.join(", "),
            aggr.join(", ")
        )
    }
}

impl ExecutionPlan for InternedAggregateExec {
    fn name(&self) -> &str {
        "InternedAggregateExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.inner.properties()
    }

    fn input_distribution_requirements(&self) -> InputDistributionRequirements {
        self.inner.input_distribution_requirements()
    }

    fn required_input_ordering(
        &self,
    ) -> Vec<Option<datafusion::physical_expr::OrderingRequirements>> {
        self.inner.required_input_ordering()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        self.inner.children()
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.inner.apply_expressions(f)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let node = Arc::clone(&self.inner).replace_children(children, options)?;
        let replacement = match node.as_ref().downcast_ref::<AggregateExec>() {
            Some(agg) => InternedAggregateExec::try_new(agg, Arc::clone(&node))?,
            None => None,
        };
        Ok(match replacement {
            Some(exec) => Arc::new(exec),
            // The new input changed what applies (e.g. it is ordered now): DataFusion's own.
            None => node,
        })
    }

    #[allow(deprecated)]
    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(
                datafusion::physical_plan::execution_plan::ChildrenPropertiesMode::Recompute,
            ),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input()?.execute(partition, Arc::clone(&context))?;
        let schema = self.schema();
        let batch_size = context.session_config().batch_size();
        let reservation = MemoryConsumer::new(format!("InternedAggregateExec[{partition}]"))
            .register(context.memory_pool());
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let options = &context.session_config().options().execution;
        let seen_capacity = SEEN_DICTIONARIES.max(2 * context.session_config().target_partitions());
        let state = GroupState {
            schema: Arc::clone(&schema),
            mode: self.mode,
            group_exprs: self.group_by.iter().map(|(e, _)| Arc::clone(e)).collect(),
            group_types: self.group_types.clone(),
            arguments: self.arguments.clone(),
            filters: self.filters.clone(),
            aggr_expr: self.aggr_expr.clone(),
            accumulators: self
                .aggr_expr
                .iter()
                .map(|a| a.create_groups_accumulator())
                .collect::<Result<_>>()?,
            groups: Groups::new(&self.group_types, seen_capacity)?,
            seen_capacity,
            group_indices: Vec::new(),
            reservation,
            // A ratio of 1 or more can never be exceeded: DataFusion's way to turn skipping off.
            probe: (self.mode == AggregateMode::Partial
                && options.skip_partial_aggregation_probe_ratio_threshold < 1.0)
                .then_some(SkipProbe {
                    rows: options.skip_partial_aggregation_probe_rows_threshold,
                    ratio: options.skip_partial_aggregation_probe_ratio_threshold,
                }),
            rows_seen: 0,
            skipping: false,
            skipped_rows: MetricBuilder::new(&self.metrics)
                .counter("skipped_aggregation_rows", partition),
        };
        let run = Run {
            input: Some(input),
            state,
            baseline,
            batch_size: batch_size.max(1),
            ready: VecDeque::new(),
        };
        let output = futures::stream::unfold(run, |mut run| async move {
            let item = run.next().await?;
            Some((item, run))
        })
        // `unfold` panics when polled after its end; a fused stream answers `None` again.
        .fuse();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, output)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        self.inner.statistics_from_inputs(input_stats, args)
    }

    fn child_stats_requests(&self, partition: Option<usize>) -> Vec<ChildStats> {
        self.inner.child_stats_requests(partition)
    }

    fn cardinality_effect(&self) -> CardinalityEffect {
        self.inner.cardinality_effect()
    }
}

/// The distinct values one dictionary key column has shown so far, each with a dense id
/// (0, 1, 2, … in order of first use), kept in row format.
struct KeyValues {
    converter: RowConverter,
    /// Id by the value's row-format bytes.
    index: ValueIndex,
    /// The values in id order.
    rows: Rows,
    /// The dictionaries recently seen, most recent last.
    seen: Vec<SeenDictionary>,
    /// How many dictionaries `seen` keeps.
    seen_capacity: usize,
    /// The null key's id, once a row had one.
    null_id: Option<usize>,
}

/// A dictionary values array the input sent, kept while batches keep referring to it: Parquet
/// decodes a column chunk's batches against one dictionary, and a final aggregation receives
/// batches whose dictionary is each partial aggregation's whole set of values, interleaved.
struct SeenDictionary {
    /// Compared by buffer identity: the same dictionary arrives in a new `ArrayRef` with
    /// every batch.
    data: ArrayData,
    /// The values in row format.
    rows: Rows,
    /// Id of each value, [`UNRESOLVED`] until a row's code points to it: a dictionary can hold
    /// values no row uses (a filter keeps the whole dictionary), and those must not become
    /// groups.
    ids: Vec<usize>,
}

/// How many dictionaries of one key column are kept at least; a final stage keeps one per
/// input partition (twice the target partitions), since each partial aggregation sends its
/// own.
const SEEN_DICTIONARIES: usize = 16;

/// Ids of distinct values by their row-format bytes, which live in the [`Rows`] beside it.
/// Each entry holds the value's full hash next to its id, so a probe touches the bytes only
/// for the value it finds, and growing never hashes again.
#[derive(Default)]
struct ValueIndex {
    table: HashTable<(u64, usize)>,
    hasher: foldhash::fast::FixedState,
}

impl ValueIndex {
    /// The id of the value `row`, adding it to `rows` when it is new.
    fn intern(&mut self, rows: &mut Rows, row: Row<'_>) -> usize {
        let bytes = row.data();
        let hash = self.hasher.hash_one(bytes);
        let same = |&(h, id): &(u64, usize)| h == hash && rows.row(id).data() == bytes;
        if let Some(&(_, id)) = self.table.find(hash, same) {
            return id;
        }
        let id = rows.num_rows();
        rows.push(row);
        self.table.insert_unique(hash, (hash, id), |&(h, _)| h);
        id
    }

    fn size(&self) -> usize {
        self.table.capacity() * (size_of::<(u64, usize)>() + 1)
    }
}

/// A dictionary value no row has used yet.
const UNRESOLVED: usize = usize::MAX;

impl KeyValues {
    fn new(key_type: &DataType, seen_capacity: usize) -> Result<KeyValues> {
        let DataType::Dictionary(_, value_type) = key_type else {
            return Err(internal_datafusion_err!(
                "dictionary aggregation over {key_type}"
            ));
        };
        let converter = RowConverter::new(vec![SortField::new(value_type.as_ref().clone())])?;
        let rows = converter.empty_rows(0, 0);
        Ok(KeyValues {
            converter,
            index: ValueIndex::default(),
            rows,
            seen: Vec::new(),
            seen_capacity,
            null_id: None,
        })
    }

    fn len(&self) -> usize {
        self.rows.num_rows()
    }

    /// Writes the id of each row's key of `keys` (a dictionary array) to `ids`.
    fn ids(&mut self, keys: &ArrayRef, ids: &mut Vec<usize>) -> Result<()> {
        let rows = keys.len();
        let dict = keys
            .as_any_dictionary_opt()
            .ok_or_else(|| internal_datafusion_err!("group key is not a dictionary"))?;
        ids.clear();
        ids.reserve(rows);
        let value_type = dict.values().data_type();
        let nulls = dict.keys().logical_nulls().filter(|n| n.null_count() > 0);
        match nulls {
            // Every code null: the values array may even be empty.
            Some(nulls) if nulls.null_count() == rows => {
                let id = self.null_id(value_type)?;
                ids.resize(rows, id);
            }
            Some(nulls) => {
                let null_id = self.null_id(value_type)?;
                self.use_values(dict.values())?;
                let codes = dict.normalized_keys();
                for (&code, valid) in codes.iter().zip(nulls.iter()) {
                    if valid {
                        self.resolve(code)?;
                    }
                }
                let value_ids = self.current_ids()?;
                // Every code of a valid row was resolved above (`resolve` checks its range).
                ids.extend(
                    codes
                        .iter()
                        .zip(nulls.iter())
                        .map(|(&code, valid)| if valid { value_ids[code] } else { null_id }),
                );
            }
            None => {
                self.use_values(dict.values())?;
                let codes = dict.normalized_keys();
                // Two passes: the first interns the values the codes use (rare work, a branch
                // per row), the second is a plain gather.
                for &code in &codes {
                    self.resolve(code)?;
                }
                let value_ids = self.current_ids()?;
                ids.extend(codes.iter().map(|&code| value_ids[code]));
            }
        }
        Ok(())
    }

    /// Makes `values` the current dictionary (the last of `seen`), whose codes
    /// [`KeyValues::resolve`] resolves.
    fn use_values(&mut self, values: &ArrayRef) -> Result<()> {
        let data = values.to_data();
        if let Some(at) = self.seen.iter().rposition(|d| d.data.ptr_eq(&data)) {
            let last = self.seen.len() - 1;
            if at != last {
                let found = self.seen.remove(at);
                self.seen.push(found);
            }
            return Ok(());
        }
        if self.seen.len() >= self.seen_capacity {
            self.seen.remove(0);
        }
        let rows = self.converter.convert_columns(&[Arc::clone(values)])?;
        self.seen.push(SeenDictionary {
            data,
            rows,
            ids: vec![UNRESOLVED; values.len()],
        });
        Ok(())
    }

    /// The ids of the current dictionary's values.
    fn current_ids(&self) -> Result<&[usize]> {
        self.seen
            .last()
            .map(|d| d.ids.as_slice())
            .ok_or_else(|| internal_datafusion_err!("dictionary values not set"))
    }

    /// Gives value `code` of the current dictionary its id (interning it) unless it has one;
    /// afterwards [`KeyValues::current_ids`] holds it.
    #[inline]
    fn resolve(&mut self, code: usize) -> Result<()> {
        let Some(current) = self.seen.last_mut() else {
            return Err(internal_datafusion_err!("dictionary values not set"));
        };
        match current.ids.get(code) {
            Some(&id) if id != UNRESOLVED => Ok(()),
            Some(_) => {
                current.ids[code] = self.index.intern(&mut self.rows, current.rows.row(code));
                Ok(())
            }
            None => Err(internal_datafusion_err!(
                "dictionary code {code} out of range"
            )),
        }
    }

    /// The id of a null key (keys can be null while every dictionary value is not); its row
    /// is built once per partition.
    fn null_id(&mut self, value_type: &DataType) -> Result<usize> {
        if let Some(id) = self.null_id {
            return Ok(id);
        }
        let null = datafusion::arrow::array::new_null_array(value_type, 1);
        let rows = self.converter.convert_columns(&[null])?;
        let id = self.index.intern(&mut self.rows, rows.row(0));
        self.null_id = Some(id);
        Ok(id)
    }

    /// The key column of the groups whose ids are `ids`, of type `key_type`: a dictionary over
    /// the distinct values, so no value is hashed again.
    fn column(&self, ids: impl Iterator<Item = usize>, key_type: &DataType) -> Result<ArrayRef> {
        let values = self
            .converter
            .convert_rows(self.rows.iter())?
            .into_iter()
            .next()
            .ok_or_else(|| internal_datafusion_err!("no group column"))?;
        // The null key (at most one id: every null has the same row) is a null code, as
        // DataFusion's own operator emits it, and takes no slot among the values: a key type
        // holds as many values with a null group as without.
        let null_at = (0..values.len()).find(|&id| values.is_null(id));
        let values = match null_at {
            Some(at) => concat(&[
                &values.slice(0, at),
                &values.slice(at + 1, values.len() - at - 1),
            ])?,
            None => values,
        };
        let codes = ids
            .map(|id| {
                let code = match null_at {
                    Some(at) if id == at => return Ok(None),
                    Some(at) if id > at => id - 1,
                    _ => id,
                };
                i32::try_from(code)
                    .map(Some)
                    .map_err(|_| internal_datafusion_err!("{id} groups"))
            })
            .collect::<Result<Int32Array>>()?;
        let dict: ArrayRef = Arc::new(DictionaryArray::<Int32Type>::try_new(codes, values)?);
        // Checked: a key type too narrow for the groups is an error, as in DataFusion's own.
        Ok(cast(&dict, key_type)?)
    }

    fn size(&self) -> usize {
        self.rows.size()
            + self
                .seen
                .iter()
                .map(|d| {
                    d.rows.size()
                        + d.ids.capacity() * size_of::<usize>()
                        + d.data.get_buffer_memory_size()
                })
                .sum::<usize>()
            + self.index.size()
    }
}

/// The groups seen so far: with one key a group is that key's value id; with several, each
/// distinct combination of the keys' value ids is a group, numbered by pairing: the first two
/// keys' ids form a pair id, that and the third key's id the next pair id, and so on.
struct CodeGroups {
    keys: Vec<KeyValues>,
    /// One pairing per key after the first.
    pairs: Vec<Pairs>,
    /// The value ids of the rows of the current batch, one vector per key.
    batch_ids: Vec<Vec<usize>>,
}

/// Dense ids for pairs of ids. A pair is packed into one `u64`, so a probe compares in the
/// table without a second memory access: grouping by two columns of 10M rows is dominated by
/// the table's cache misses.
#[derive(Default)]
struct Pairs {
    index: hashbrown::HashMap<u64, usize, foldhash::fast::FixedState>,
    /// The pairs in id order.
    pairs: Vec<(u32, u32)>,
}

impl Pairs {
    /// Replaces each `left[i]` with the id of the pair `(left[i], right[i])`.
    fn pair(&mut self, left: &mut [usize], right: &[usize]) -> Result<()> {
        let narrow = |id: usize| {
            u32::try_from(id).map_err(|_| internal_datafusion_err!("{id} distinct keys"))
        };
        for (l, &r) in left.iter_mut().zip(right) {
            let pair = (narrow(*l)?, narrow(r)?);
            let packed = (u64::from(pair.0) << 32) | u64::from(pair.1);
            let next = self.pairs.len();
            *l = *self.index.entry(packed).or_insert_with(|| {
                self.pairs.push(pair);
                next
            });
        }
        Ok(())
    }

    fn size(&self) -> usize {
        self.index.capacity() * (size_of::<u64>() + size_of::<usize>() + 1)
            + self.pairs.capacity() * size_of::<(u32, u32)>()
    }
}

impl CodeGroups {
    fn new(key_types: &[DataType], seen_capacity: usize) -> Result<CodeGroups> {
        Ok(CodeGroups {
            keys: key_types
                .iter()
                .map(|t| KeyValues::new(t, seen_capacity))
                .collect::<Result<_>>()?,
            pairs: (1..key_types.len()).map(|_| Pairs::default()).collect(),
            batch_ids: vec![Vec::new(); key_types.len()],
        })
    }

    fn len(&self) -> usize {
        match self.pairs.last() {
            Some(last) => last.pairs.len(),
            None => self.keys.first().map_or(0, KeyValues::len),
        }
    }

    /// Writes the group of each row to `groups`, given the rows' key columns.
    fn groups(&mut self, keys: &[ArrayRef], groups: &mut Vec<usize>) -> Result<()> {
        for ((values, keys), ids) in self.keys.iter_mut().zip(keys).zip(&mut self.batch_ids) {
            values.ids(keys, ids)?;
        }
        let Some((first, rest)) = self.batch_ids.split_first_mut() else {
            return Err(internal_datafusion_err!("aggregation without keys"));
        };
        for (pairs, right) in self.pairs.iter_mut().zip(rest.iter()) {
            pairs.pair(first, right)?;
        }
        std::mem::swap(first, groups);
        Ok(())
    }

    /// The key columns of every group, in group order.
    fn columns(&self, key_types: &[DataType]) -> Result<Vec<ArrayRef>> {
        // Unpair from the last key back: the group ids at each level are the left halves of
        // the next level's pairs.
        let mut ids: Vec<usize> = (0..self.len()).collect();
        let mut columns = Vec::with_capacity(self.keys.len());
        for (k, values) in self.keys.iter().enumerate().rev() {
            let key_ids = match k.checked_sub(1).and_then(|p| self.pairs.get(p)) {
                Some(pairs) => {
                    let (left, right): (Vec<usize>, Vec<usize>) = ids
                        .iter()
                        .map(|&id| {
                            let (l, r) = pairs.pairs[id];
                            (l as usize, r as usize)
                        })
                        .unzip();
                    ids = left;
                    right
                }
                None => std::mem::take(&mut ids),
            };
            columns.push(values.column(key_ids.into_iter(), &key_types[k])?);
        }
        columns.reverse();
        Ok(columns)
    }

    fn size(&self) -> usize {
        self.keys.iter().map(KeyValues::size).sum::<usize>()
            + self.pairs.iter().map(Pairs::size).sum::<usize>()
            + self
                .batch_ids
                .iter()
                .map(|ids| ids.capacity() * size_of::<usize>())
                .sum::<usize>()
    }
}

/// One partition's execution: the input until it ends, then the results in batches.
struct Run {
    /// `None` once the input ended or failed.
    input: Option<SendableRecordBatchStream>,
    state: GroupState,
    baseline: BaselineMetrics,
    batch_size: usize,
    /// Results waiting to be returned.
    ready: VecDeque<RecordBatch>,
}

impl Run {
    /// The next result, or `None` at the end.
    async fn next(&mut self) -> Option<Result<RecordBatch>> {
        loop {
            if let Some(batch) = self.ready.pop_front() {
                return Some(Ok(batch.record_output(&self.baseline)));
            }
            let Some(input) = self.input.as_mut() else {
                self.baseline.done();
                return None;
            };
            let step = match input.next().await {
                Some(Ok(batch)) => {
                    let _timer = self.baseline.elapsed_compute().timer();
                    self.state.update(&batch)
                }
                Some(Err(e)) => Err(e),
                None => {
                    self.input = None;
                    let _timer = self.baseline.elapsed_compute().timer();
                    self.state.emit()
                }
            };
            match step {
                Ok(Some(batch)) => {
                    let rows = batch.num_rows();
                    let mut offset = 0;
                    while offset < rows {
                        let len = self.batch_size.min(rows - offset);
                        self.ready.push_back(batch.slice(offset, len));
                        offset += len;
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    self.input = None;
                    self.ready.clear();
                    self.baseline.done();
                    return Some(Err(e));
                }
            }
        }
    }
}

/// The groups of one aggregation: the dictionary keys' codes, or the values of one view key.
enum Groups {
    Codes(CodeGroups),
    Views(ViewInterner),
}

impl Groups {
    fn new(key_types: &[DataType], seen_capacity: usize) -> Result<Groups> {
        Ok(match key_types {
            [t @ (DataType::Utf8View | DataType::BinaryView)] => {
                Groups::Views(ViewInterner::new(t)?)
            }
            _ => Groups::Codes(CodeGroups::new(key_types, seen_capacity)?),
        })
    }

    fn len(&self) -> usize {
        match self {
            Groups::Codes(codes) => codes.len(),
            Groups::Views(views) => views.len(),
        }
    }

    /// Writes the group of each row to `groups`, given the rows' key columns.
    fn groups(&mut self, keys: &[ArrayRef], groups: &mut Vec<usize>) -> Result<()> {
        match (self, keys) {
            (Groups::Codes(codes), _) => codes.groups(keys, groups),
            (Groups::Views(views), [key]) => views.intern(key, groups),
            (Groups::Views(_), _) => Err(internal_datafusion_err!(
                "{} key columns for one view key",
                keys.len()
            )),
        }
    }

    /// The key columns of every group, in group order. Takes the view key's values out: the
    /// groups are emitted once, at the end or before a reset.
    fn columns(&mut self, key_types: &[DataType]) -> Result<Vec<ArrayRef>> {
        match self {
            Groups::Codes(codes) => codes.columns(key_types),
            Groups::Views(views) => Ok(vec![views.take_values()?]),
        }
    }

    fn size(&self) -> usize {
        match self {
            Groups::Codes(codes) => codes.size(),
            Groups::Views(views) => views.size(),
        }
    }
}

/// When a first stage stops aggregating and passes its rows on as states, as DataFusion's does
/// (`skip_partial_aggregation_probe_*` options): from `rows` input rows on, after each batch,
/// if the groups number more than `ratio` times the rows, aggregating here does not reduce the
/// data.
struct SkipProbe {
    rows: usize,
    ratio: f64,
}

/// What a batch gives the aggregation, evaluated.
struct Inputs {
    keys: Vec<ArrayRef>,
    /// Per aggregate, its arguments.
    values: Vec<Vec<ArrayRef>>,
    /// Per aggregate, its FILTER column, if it has one.
    filters: Vec<Option<ArrayRef>>,
}

/// One partition's aggregation state.
struct GroupState {
    schema: SchemaRef,
    mode: AggregateMode,
    group_exprs: Vec<Arc<dyn PhysicalExpr>>,
    group_types: Vec<DataType>,
    arguments: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    aggr_expr: Vec<Arc<AggregateFunctionExpr>>,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
    groups: Groups,
    /// Capacity of the dictionary keys' caches, to build [`Groups`] anew.
    seen_capacity: usize,
    group_indices: Vec<usize>,
    reservation: MemoryReservation,
    /// Still to decide whether to stop aggregating (first stage only).
    probe: Option<SkipProbe>,
    rows_seen: usize,
    /// Rows pass through as states, unaggregated.
    skipping: bool,
    /// Rows passed through so far (DataFusion's metric of the same name).
    skipped_rows: Count,
}

impl GroupState {
    /// Takes in `batch`. Returns a batch of results when the first stage emits early: when its
    /// memory is refused (as DataFusion's first stage does, instead of failing), or when it
    /// stops aggregating and passes rows on as states.
    fn update(&mut self, batch: &RecordBatch) -> Result<Option<RecordBatch>> {
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(None);
        }
        if self.skipping {
            self.skipped_rows.add(rows);
            return self.states_of(batch).map(Some);
        }
        let Inputs {
            keys,
            values,
            filters,
        } = self.inputs(batch)?;
        self.groups.groups(&keys, &mut self.group_indices)?;
        let total = self.groups.len();
        for ((acc, values), filter) in self.accumulators.iter_mut().zip(&values).zip(&filters) {
            let filter: Option<&BooleanArray> = filter.as_ref().map(|f| f.as_boolean());
            match self.mode.input_mode() {
                AggregateInputMode::Raw => {
                    acc.update_batch(values, &self.group_indices, filter, total)?
                }
                AggregateInputMode::Partial => {
                    acc.merge_batch(values, &self.group_indices, total)?
                }
            }
        }
        self.rows_seen += rows;
        if let Some(probe) = &self.probe
            && self.rows_seen >= probe.rows
            && self.groups.len() as f64 > probe.ratio * self.rows_seen as f64
        {
            self.probe = None;
            self.skipping = true;
            return self.emit_and_reset();
        }
        let size = self.groups.size()
            + self.accumulators.iter().map(|a| a.size()).sum::<usize>()
            + self.group_indices.capacity() * size_of::<usize>();
        match self.reservation.try_resize(size) {
            Ok(()) => Ok(None),
            // Emitting helps only with groups to emit; otherwise the refusal stands.
            Err(DataFusionError::ResourcesExhausted(_))
                if self.mode == AggregateMode::Partial && self.groups.len() > 1 =>
            {
                self.emit_and_reset()
            }
            Err(e) => Err(e),
        }
    }

    /// The first stage's output for `batch` without aggregating: each row its own group.
    fn states_of(&mut self, batch: &RecordBatch) -> Result<RecordBatch> {
        let Inputs {
            keys: mut columns,
            values,
            filters,
        } = self.inputs(batch)?;
        for ((acc, values), filter) in self.accumulators.iter().zip(&values).zip(&filters) {
            columns.extend(acc.convert_to_state(values, filter.as_ref().map(|f| f.as_boolean()))?);
        }
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }

    /// `batch`'s key columns, aggregate arguments and FILTER columns.
    fn inputs(&self, batch: &RecordBatch) -> Result<Inputs> {
        let rows = batch.num_rows();
        let evaluate = |e: &Arc<dyn PhysicalExpr>| e.evaluate(batch)?.into_array(rows);
        Ok(Inputs {
            keys: self
                .group_exprs
                .iter()
                .map(evaluate)
                .collect::<Result<_>>()?,
            values: evaluate_many(&self.arguments, batch)?,
            filters: self
                .filters
                .iter()
                .map(|f| f.as_ref().map(evaluate).transpose())
                .collect::<Result<_>>()?,
        })
    }

    /// Emits the groups so far and starts again with none.
    fn emit_and_reset(&mut self) -> Result<Option<RecordBatch>> {
        let batch = self.emit()?;
        self.groups = Groups::new(&self.group_types, self.seen_capacity)?;
        self.accumulators = self
            .aggr_expr
            .iter()
            .map(|a| a.create_groups_accumulator())
            .collect::<Result<_>>()?;
        Ok(batch)
    }

    fn emit(&mut self) -> Result<Option<RecordBatch>> {
        if self.groups.len() == 0 {
            return Ok(None);
        }
        let mut columns = self.groups.columns(&self.group_types)?;
        for acc in &mut self.accumulators {
            if self.mode.output_mode() == AggregateOutputMode::Final {
                columns.push(acc.evaluate(EmitTo::All)?);
            } else {
                columns.extend(acc.state(EmitTo::All)?);
            }
        }
        self.reservation.free();
        Ok(Some(RecordBatch::try_new(
            Arc::clone(&self.schema),
            columns,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{DictionaryArray, Int8Array, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{Field, Int8Type, Schema};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::prelude::{SessionConfig, SessionContext};

    fn dict(keys: Vec<Option<i8>>, values: ArrayRef) -> ArrayRef {
        Arc::new(DictionaryArray::<Int8Type>::try_new(Int8Array::from(keys), values).unwrap())
    }

    /// Batches whose dictionaries differ, repeat (the same values array), contain a null value,
    /// are empty with all keys null, and have null codes: every case `update` distinguishes.
    fn table(schema: &SchemaRef) -> Vec<Vec<RecordBatch>> {
        let a_values: ArrayRef =
            Arc::new(StringArray::from(vec!["success", "failure", "challenge"]));
        let b_values: ArrayRef = Arc::new(StringArray::from(vec![
            Some("failure"),
            Some("timeout"),
            None,
        ]));
        let empty: ArrayRef = Arc::new(StringArray::from(Vec::<&str>::new()));
        let batch = |k: ArrayRef, v: Vec<Option<i64>>| {
            RecordBatch::try_new(Arc::clone(schema), vec![k, Arc::new(Int64Array::from(v))])
                .unwrap()
        };
        vec![
            vec![
                batch(
                    dict(
                        vec![Some(0), Some(1), Some(0), Some(2), None, Some(1)],
                        Arc::clone(&a_values),
                    ),
                    vec![Some(1), Some(20), Some(3), None, Some(5), Some(60)],
                ),
                batch(
                    dict(vec![Some(0), Some(1), Some(2), Some(0), Some(0)], b_values),
                    vec![Some(7), Some(8), Some(9), None, Some(11)],
                ),
            ],
            vec![
                batch(dict(vec![None, None], empty), vec![Some(12), None]),
                batch(
                    dict(vec![Some(2), Some(2), Some(1)], Arc::clone(&a_values)),
                    vec![Some(13), Some(14), Some(15)],
                ),
                batch(
                    dict(vec![Some(1), Some(0)], a_values),
                    vec![Some(16), Some(17)],
                ),
            ],
        ]
    }

    /// `k`, a dictionary of strings with 8-bit codes, and `v`, integers: the shape of [`table`].
    /// Columns `k` (of `key_type`) and `v` (Int64), both nullable.
    fn k_v_schema_of(key_type: DataType) -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", key_type, true),
            Field::new("v", DataType::Int64, true),
        ]))
    }

    /// The usual test table: `k` a byte-coded string dictionary.
    fn k_v_schema() -> SchemaRef {
        k_v_schema_of(DataType::Dictionary(
            Box::new(DataType::Int8),
            Box::new(DataType::Utf8),
        ))
    }

    async fn run(with_rule: bool, partitions: usize, sql: &str) -> (String, String) {
        let schema = k_v_schema();
        let data = table(&schema);
        run_on(with_rule, partitions, schema, data, sql).await
    }

    async fn run_on(
        with_rule: bool,
        partitions: usize,
        schema: SchemaRef,
        data: Vec<Vec<RecordBatch>>,
        sql: &str,
    ) -> (String, String) {
        let config = SessionConfig::new().with_target_partitions(partitions);
        let ctx = session(with_rule, config, None, schema, data);
        query(&ctx, sql, "EXPLAIN").await
    }

    /// A session with `config` (and `runtime`), the rule if `with_rule`, authwatch's `count`,
    /// and `data` as table `t`.
    fn session(
        with_rule: bool,
        config: SessionConfig,
        runtime: Option<Arc<datafusion::execution::runtime_env::RuntimeEnv>>,
        schema: SchemaRef,
        data: Vec<Vec<RecordBatch>>,
    ) -> SessionContext {
        let mut builder = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features();
        if let Some(runtime) = runtime {
            builder = builder.with_runtime_env(runtime);
        }
        if with_rule {
            builder = builder.with_physical_optimizer_rule(Arc::new(InternedAggregation));
        }
        let ctx = SessionContext::new_with_state(builder.build());
        ctx.register_udaf(datafusion::logical_expr::AggregateUDF::from(
            crate::DistinctCount::default(),
        ));
        let mem = MemTable::try_new(schema, data).unwrap();
        ctx.register_table("t", Arc::new(mem)).unwrap();
        ctx
    }

    /// `sql`'s result, and the plan `explain` (`EXPLAIN` or `EXPLAIN ANALYZE`) gives, as text.
    async fn query(ctx: &SessionContext, sql: &str, explain: &str) -> (String, String) {
        let result = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let plan = ctx
            .sql(&format!("{explain} {sql}"))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        (
            pretty_format_batches(&result).unwrap().to_string(),
            pretty_format_batches(&plan).unwrap().to_string(),
        )
    }

    /// Runs `sql` without and with the rule; the results must agree and the rule must have
    /// applied. Returns the result.
    async fn same_as_datafusion(
        partitions: usize,
        schema: &SchemaRef,
        data: &[Vec<RecordBatch>],
        sql: &str,
    ) -> String {
        let (expected, _) = run_on(false, partitions, Arc::clone(schema), data.to_vec(), sql).await;
        let (actual, plan) = run_on(true, partitions, Arc::clone(schema), data.to_vec(), sql).await;
        assert_eq!(actual, expected, "{sql} with {partitions} partitions");
        assert!(plan.contains("InternedAggregateExec"), "{sql}: {plan}");
        actual
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    /// Same result as DataFusion's own operator, in the two-phase (Partial → Final) plan of
    /// several partitions and the one-phase (Single) plan of one, and the rule did apply.
    #[test]
    fn same_results_as_datafusion() {
        let queries = [
            "SELECT k, count(*) AS n, count(v) AS c, sum(v) AS s, avg(v) AS a, min(v) AS lo, \
             max(v) AS hi FROM t GROUP BY k ORDER BY k NULLS FIRST",
            "SELECT k, count(*) FILTER (WHERE v > 10) AS big FROM t GROUP BY k ORDER BY k NULLS FIRST",
            "SELECT k, count(*) AS n FROM t WHERE v IS NOT NULL GROUP BY k HAVING count(*) > 1 \
             ORDER BY n DESC, k",
            "SELECT k FROM t GROUP BY k ORDER BY k NULLS LAST",
            // Filters keep the whole dictionary: values no remaining row uses are no groups.
            "SELECT k, count(*) AS n FROM t WHERE k <> 'failure' GROUP BY k ORDER BY k NULLS FIRST",
            "SELECT k, count(*) AS n, sum(v) AS s FROM t WHERE v > 10 GROUP BY k ORDER BY k NULLS FIRST",
            "SELECT nullif(k, 'success') AS k2, count(*) AS n FROM t GROUP BY nullif(k, 'success') \
             ORDER BY k2 NULLS FIRST",
        ];
        let schema = k_v_schema();
        let data = table(&schema);
        block_on(async {
            for partitions in [1, 2, 4] {
                for sql in queries {
                    same_as_datafusion(partitions, &schema, &data, sql).await;
                }
            }
        });
        // The null group holds the null codes, the null dictionary value and the all-null batch.
        let (text, _) = block_on(run(
            true,
            2,
            "SELECT k, count(*) AS n FROM t GROUP BY k ORDER BY k NULLS FIRST",
        ));
        let expected = [
            "+-----------+---+",
            "| k         | n |",
            "+-----------+---+",
            "|           | 4 |",
            "| challenge | 3 |",
            "| failure   | 7 |",
            "| success   | 3 |",
            "| timeout   | 1 |",
            "+-----------+---+",
        ]
        .join("\n");
        assert_eq!(text, expected);
    }

    /// Shapes the operator does not handle keep DataFusion's: grouping by a plain column, by a
    /// dictionary and a plain column, and a limit pushed into the aggregation.
    #[test]
    fn other_shapes_are_left_alone() {
        block_on(async {
            for sql in [
                "SELECT v, count(*) FROM t GROUP BY v ORDER BY v",
                "SELECT k, v, count(*) FROM t GROUP BY k, v ORDER BY k, v",
                "SELECT k FROM t GROUP BY k LIMIT 2",
                // The partial results' first column is an integer where the table's is a
                // dictionary: the final stage must look at its own input.
                "SELECT v % 2 AS m, count(k) AS n FROM t GROUP BY v % 2 ORDER BY m",
            ] {
                let (expected, _) = run(false, 2, sql).await;
                let (actual, plan) = run(true, 2, sql).await;
                assert!(!plan.contains("InternedAggregateExec"), "{sql}: {plan}");
                if !sql.contains("LIMIT") {
                    assert_eq!(actual, expected, "{sql}");
                }
            }
        });
    }

    /// Several dictionary keys: each combination of the keys' values is a group, including
    /// combinations with a null key; `count(DISTINCT …)` (planned as a group-by of both
    /// columns) takes this path too.
    #[test]
    fn several_dictionary_keys() {
        let key = || DataType::Dictionary(Box::new(DataType::Int8), Box::new(DataType::Utf8));
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("k", key(), true),
            Field::new("c", key(), true),
            Field::new("v", DataType::Int64, true),
        ]));
        let countries: ArrayRef = Arc::new(StringArray::from(vec!["JP", "US", "SE"]));
        let other: ArrayRef = Arc::new(StringArray::from(vec![Some("SE"), None, Some("GB")]));
        let base = table(&k_v_schema());
        let (a, b, c) = (&base[0][0], &base[0][1], &base[1]);
        let with_c = |batch: &RecordBatch, codes: Vec<Option<i8>>, values: &ArrayRef| {
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    Arc::clone(batch.column(0)),
                    dict(codes, Arc::clone(values)),
                    Arc::clone(batch.column(1)),
                ],
            )
            .unwrap()
        };
        let data = vec![
            vec![
                with_c(
                    a,
                    vec![Some(0), Some(1), Some(0), Some(2), Some(1), None],
                    &countries,
                ),
                with_c(b, vec![Some(0), Some(1), Some(2), Some(0), Some(2)], &other),
            ],
            vec![
                with_c(&c[0], vec![Some(1), None], &countries),
                with_c(&c[1], vec![Some(0), Some(0), Some(1)], &countries),
                with_c(&c[2], vec![Some(2), Some(2)], &other),
            ],
        ];
        let queries = [
            "SELECT k, c, count(*) AS n, sum(v) AS s FROM t GROUP BY k, c \
             ORDER BY k NULLS FIRST, c NULLS FIRST",
            "SELECT c, k, max(v) AS m FROM t WHERE v > 2 GROUP BY c, k \
             ORDER BY c NULLS FIRST, k NULLS FIRST",
            "SELECT k, count(DISTINCT c) AS countries FROM t GROUP BY k ORDER BY k NULLS FIRST",
            "SELECT c, count(DISTINCT k) AS n FROM t GROUP BY c HAVING count(DISTINCT k) > 1 \
             ORDER BY c NULLS FIRST",
            "SELECT k, c, k AS k2 FROM t GROUP BY k, c, k ORDER BY k NULLS FIRST, c NULLS FIRST",
        ];
        block_on(async {
            for partitions in [1, 2, 4] {
                for sql in queries {
                    same_as_datafusion(partitions, &schema, &data, sql).await;
                }
            }
        });
    }

    /// A byte-keyed dictionary holds 256 values; a null group next to them is a null code, not
    /// a 257th value, so the result fits the key type as DataFusion's own does.
    #[test]
    fn a_null_group_takes_no_dictionary_slot() {
        use datafusion::arrow::array::UInt8Array;
        use datafusion::arrow::datatypes::UInt8Type;
        let key_type = DataType::Dictionary(Box::new(DataType::UInt8), Box::new(DataType::Utf8));
        let schema = k_v_schema_of(key_type);
        let batch = |codes: Vec<Option<u8>>, values: Vec<String>| {
            let rows = codes.len();
            let k = DictionaryArray::<UInt8Type>::try_new(
                UInt8Array::from(codes),
                Arc::new(StringArray::from(values)),
            )
            .unwrap();
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![Arc::new(k), Arc::new(Int64Array::from(vec![1; rows]))],
            )
            .unwrap()
        };
        let names: Vec<String> = (0..256).map(|i| format!("v{i:03}")).collect();
        let data = vec![vec![
            // The null key comes first, so it would have taken the first slot.
            batch(vec![None, None], Vec::new()),
            batch((0..=255).map(Some).collect(), names),
        ]];
        let sql = "SELECT k, count(*) AS n FROM t GROUP BY k ORDER BY k NULLS FIRST";
        block_on(async {
            for partitions in [1, 2] {
                let actual = same_as_datafusion(partitions, &schema, &data, sql).await;
                assert!(actual.contains("|      | 2 |"), "{actual}");
                assert!(actual.contains("| v255 | 1 |"), "{actual}");
            }
        });
    }

    /// Dictionaries of other value types (here integers, with 32-bit codes) take the same path:
    /// the row format and the cast back to the key type are not string-specific.
    #[test]
    fn numeric_dictionary_values() {
        use datafusion::arrow::array::Int32Array;
        use datafusion::arrow::datatypes::Int32Type;
        let key_type = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Int64));
        let schema = k_v_schema_of(key_type);
        let batch = |codes: Vec<Option<i32>>, values: Vec<i64>, v: Vec<i64>| {
            let k = DictionaryArray::<Int32Type>::try_new(
                Int32Array::from(codes),
                Arc::new(Int64Array::from(values)),
            )
            .unwrap();
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![Arc::new(k), Arc::new(Int64Array::from(v))],
            )
            .unwrap()
        };
        let data = vec![
            vec![batch(
                vec![Some(0), Some(1), None],
                vec![443, 22],
                vec![1, 2, 3],
            )],
            vec![batch(
                vec![Some(1), Some(0), Some(1)],
                vec![22, 8443],
                vec![4, 5, 6],
            )],
        ];
        let sql = "SELECT k, count(*) AS n, sum(v) AS s FROM t GROUP BY k ORDER BY k NULLS FIRST";
        block_on(async {
            for partitions in [1, 2] {
                let actual = same_as_datafusion(partitions, &schema, &data, sql).await;
                assert!(actual.contains("| 22   | 2 | 7  |"), "{actual}");
            }
        });
    }

    /// A table keyed by a view column: long and short keys (the long ones share prefixes),
    /// nulls, and a second view column for distinct counts; several batches per partition.
    fn view_table() -> (SchemaRef, Vec<Vec<RecordBatch>>) {
        use datafusion::arrow::array::StringViewArray;
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8View, true),
            Field::new("c", DataType::Utf8View, true),
            Field::new("v", DataType::Int64, true),
        ]));
        let batch = |from: i64, rows: i64| {
            let keys: Vec<Option<String>> = (from..from + rows)
                .map(|i| match (i * 7919) % 901 {
                    0 => None,
                    k if k % 3 == 0 => Some(format!("u{k}")),
                    k => Some(format!("user.number.{k}@tenant.example.com")),
                })
                .collect();
            let countries: Vec<Option<String>> = (from..from + rows)
                .map(|i| (i % 13 != 0).then(|| format!("C{}", i % 7)))
                .collect();
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    Arc::new(StringViewArray::from(keys)),
                    Arc::new(StringViewArray::from(countries)),
                    Arc::new(Int64Array::from((from..from + rows).collect::<Vec<_>>())),
                ],
            )
            .unwrap()
        };
        let data = vec![
            vec![batch(0, 1000), batch(1000, 700)],
            vec![batch(1700, 1300), batch(3000, 1)],
        ];
        (schema, data)
    }

    const VIEW_QUERIES: [&str; 4] = [
        "SELECT k, count(*) AS n, sum(v) AS s, min(v) AS lo FROM t GROUP BY k ORDER BY k NULLS FIRST",
        // `count(*)` beside it keeps the distinct count an aggregate (no rewrite to a group-by
        // on both columns), through authwatch's groups accumulator.
        "SELECT k, count(*) AS n, count(DISTINCT c) AS d FROM t WHERE v % 2 = 0 GROUP BY k \
         HAVING count(DISTINCT c) > 1 ORDER BY d DESC, k",
        "SELECT k, count(*) FILTER (WHERE v > 1500) AS late FROM t GROUP BY k ORDER BY k NULLS LAST",
        "SELECT k FROM t GROUP BY k ORDER BY k NULLS FIRST",
    ];

    /// Runs `sql` over the view table with `config`, with or without the rule; the result and
    /// the `EXPLAIN ANALYZE` text.
    async fn run_views(with_rule: bool, config: SessionConfig, sql: &str) -> (String, String) {
        let (schema, data) = view_table();
        let ctx = session(with_rule, config, None, schema, data);
        query(&ctx, sql, "EXPLAIN ANALYZE").await
    }

    /// A count metric of our first stage, from the `EXPLAIN ANALYZE` text (which rounds counts
    /// to three digits: "2.50 K"); 0 when the stage did not record it.
    fn first_stage_metric(plan: &str, name: &str) -> f64 {
        let line = plan
            .lines()
            .find(|l| l.contains("InternedAggregateExec: mode=Partial"))
            .unwrap_or_else(|| panic!("no first stage of ours: {plan}"));
        let Some(value) = line.split(&format!("{name}=")).nth(1) else {
            return 0.0;
        };
        let value = value.split([',', ']']).next().unwrap();
        match value.strip_suffix(" K") {
            Some(thousands) => thousands.parse::<f64>().unwrap() * 1000.0,
            None => value.parse().unwrap(),
        }
    }

    fn first_stage_rows(plan: &str) -> f64 {
        first_stage_metric(plan, "output_rows")
    }

    /// One view key: the first stage is ours (the final one DataFusion's), and the results are
    /// DataFusion's, over nulls, short (inline) and long keys, filters and distinct counts.
    #[test]
    fn one_view_key_in_the_first_stage() {
        block_on(async {
            for partitions in [2, 4] {
                for sql in VIEW_QUERIES {
                    let config = || SessionConfig::new().with_target_partitions(partitions);
                    let (expected, _) = run_views(false, config(), sql).await;
                    let (actual, plan) = run_views(true, config(), sql).await;
                    assert_eq!(actual, expected, "{sql} with {partitions} partitions");
                    assert!(
                        plan.contains("InternedAggregateExec: mode=Partial"),
                        "{plan}"
                    );
                    assert!(
                        !plan.contains("InternedAggregateExec: mode=Final"),
                        "{plan}"
                    );
                }
            }
        });
    }

    /// When the groups are nearly as many as the rows, the first stage passes rows on as
    /// states (DataFusion's probe options), with the same results.
    #[test]
    fn first_stage_stops_aggregating_when_it_does_not_reduce() {
        block_on(async {
            let config = |ratio: f64| {
                let mut config = SessionConfig::new().with_target_partitions(2);
                let execution = &mut config.options_mut().execution;
                execution.skip_partial_aggregation_probe_rows_threshold = 500;
                execution.skip_partial_aggregation_probe_ratio_threshold = ratio;
                config
            };
            for sql in VIEW_QUERIES {
                let (expected, _) = run_views(false, config(0.8), sql).await;
                // 901 keys in 3,001 rows: at the probe (after each partition's first batch)
                // the groups are 0.69–1.0 of the rows, over 0.1; a ratio of 1 turns skipping
                // off, as in DataFusion.
                let (skipped, skipped_plan) = run_views(true, config(0.1), sql).await;
                assert_eq!(skipped, expected, "{sql}");
                let (aggregated, plan) = run_views(true, config(1.0), sql).await;
                assert_eq!(aggregated, expected, "{sql}");
                // The rows after each partition's first batch passed through: 700 + 1. (The
                // filter gathers each partition's rows into one batch, so there the probe
                // decides after the last batch: it emits, and nothing is left to pass.)
                let after_first = if sql.contains("FROM t WHERE") {
                    0.0
                } else {
                    701.0
                };
                let passed = first_stage_metric(&skipped_plan, "skipped_aggregation_rows");
                assert!((passed - after_first).abs() < 10.0, "{sql}: {skipped_plan}");
                assert_eq!(first_stage_metric(&plan, "skipped_aggregation_rows"), 0.0);
                // Aggregated, a partition emits each of its keys once; skipping, the rows
                // after the probe pass on one by one, repeated keys included.
                assert!(first_stage_rows(&plan) <= 2.0 * 901.0, "{sql}: {plan}");
                // (The filtered query's partitions hold each key once: both emit every row.)
                if !sql.contains("FROM t WHERE") {
                    assert!(
                        first_stage_rows(&skipped_plan) > first_stage_rows(&plan) + 100.0,
                        "{sql}: {skipped_plan}"
                    );
                }
            }
        });
    }

    /// The probe keeps looking after a batch that aggregates well, and skips once the groups
    /// outgrow the ratio: a batch of 10 keys, one of 1,000 new keys (1,010 groups in 2,000
    /// rows), then one that passes through.
    #[test]
    fn first_stage_probe_keeps_looking_until_it_skips() {
        use datafusion::arrow::array::StringViewArray;
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8View, true),
            Field::new("v", DataType::Int64, true),
        ]));
        let batch = |keys: Vec<String>| {
            let rows = keys.len() as i64;
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    Arc::new(StringViewArray::from_iter_values(keys)),
                    Arc::new(Int64Array::from((0..rows).collect::<Vec<_>>())),
                ],
            )
            .unwrap()
        };
        let partition = |p: usize| {
            vec![
                batch((0..1000).map(|i| format!("few.keys.{}", i % 10)).collect()),
                batch((0..1000).map(|i| format!("p{p}.new.key.{i}")).collect()),
                batch((0..1000).map(|i| format!("p{p}.more.key.{i}")).collect()),
            ]
        };
        let data = vec![partition(0), partition(1)];
        let mut config = SessionConfig::new().with_target_partitions(2);
        config
            .options_mut()
            .execution
            .skip_partial_aggregation_probe_rows_threshold = 500;
        config
            .options_mut()
            .execution
            .skip_partial_aggregation_probe_ratio_threshold = 0.4;
        let sql = "SELECT k, count(*) AS n, sum(v) AS s FROM t GROUP BY k ORDER BY k";
        block_on(async {
            let expected = session(
                false,
                config.clone(),
                None,
                Arc::clone(&schema),
                data.clone(),
            );
            let (expected, _) = query(&expected, sql, "EXPLAIN").await;
            let ctx = session(true, config, None, schema, data);
            let (actual, plan) = query(&ctx, sql, "EXPLAIN ANALYZE").await;
            assert_eq!(actual, expected);
            // Each partition's third batch passed through.
            assert_eq!(
                first_stage_metric(&plan, "skipped_aggregation_rows"),
                2000.0,
                "{plan}"
            );
        });
    }

    /// A pool that refuses this module's operators more than `limit` bytes each and grants
    /// everything else: memory pressure on the first stage alone.
    #[derive(Debug)]
    struct TightForUs {
        limit: usize,
        inner: datafusion::execution::memory_pool::UnboundedMemoryPool,
    }

    impl fmt::Display for TightForUs {
        fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "tight-for-us({})", self.limit)
        }
    }

    impl datafusion::execution::memory_pool::MemoryPool for TightForUs {
        fn name(&self) -> &str {
            "tight-for-us"
        }
        fn grow(&self, reservation: &MemoryReservation, additional: usize) {
            self.inner.grow(reservation, additional);
        }
        fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
            self.inner.shrink(reservation, shrink);
        }
        fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
            let ours = reservation
                .consumer()
                .name()
                .starts_with("InternedAggregateExec");
            if ours && reservation.size() + additional > self.limit {
                return datafusion::common::resources_err!("test limit of {}", self.limit);
            }
            self.inner.try_grow(reservation, additional)
        }
        fn reserved(&self) -> usize {
            self.inner.reserved()
        }
    }

    /// Under memory pressure the first stage emits what it has and starts again, as
    /// DataFusion's does, rather than failing the query.
    #[test]
    fn first_stage_emits_early_under_memory_pressure() {
        use datafusion::execution::runtime_env::RuntimeEnvBuilder;
        let (schema, data) = view_table();
        let pool = Arc::new(TightForUs {
            limit: 100_000,
            inner: Default::default(),
        });
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(pool)
            .build_arc()
            .unwrap();
        let config = || SessionConfig::new().with_target_partitions(2);
        let ctx = session(true, config(), Some(runtime), schema, data);
        block_on(async {
            for sql in VIEW_QUERIES {
                let (expected, _) = run_views(false, config(), sql).await;
                let (actual, plan) = query(&ctx, sql, "EXPLAIN ANALYZE").await;
                assert_eq!(actual, expected, "{sql}");
                // Emitting once at the end, each partition gives each of its keys once:
                // ≤ 2 × 901. (The filtered query's partitions hold each key once anyway.)
                if !sql.contains("FROM t WHERE") {
                    assert!(first_stage_rows(&plan) > 2.0 * 901.0, "{sql}: {plan}");
                }
            }
        });
    }
}
