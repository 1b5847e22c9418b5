//! Dashboard and retention on Redis, against apalis-redis 1.0's own layout (its `lua/` scripts):
//! for a queue `q`, `q:active` (list of waiting ids), `q:workers` (sorted set of worker names),
//! `q:inflight:{worker}` (set of the ids a worker holds), `q:done` and `q:dead` (plain sets, not
//! sorted sets, whatever apalis' own `stats.lua` assumes), `q:scheduled` (sorted set: apalis' own
//! push files jobs there, ours appends to `q:active` instead; failed attempts are rescheduled
//! there with status `Failed`), `q:data` (hash id → payload) and `q:meta:{id}` (hash: status,
//! attempts, max_attempts, result, done_at). Every change is one Lua script, atomic against the
//! workers' own scripts.

use std::sync::LazyLock;

use ::redis::Script;

use super::BusError;
use super::redis::RedisBus;
use super::stats::{JobState, JobView, QueueStats, last_error, payload_json, unix_time};
use crate::infra::redis::RedisConnection;

/// `[waiting, active, completed, failed, dead]` of one queue.
static STATS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local active = 0
for _, worker in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  active = active + redis.call('SCARD', ARGV[1] .. ':' .. worker)
end
local waiting, failed = redis.call('LLEN', KEYS[1]), 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
  if redis.call('HGET', ARGV[2] .. ':' .. id, 'status') == 'Failed' then
    failed = failed + 1
  else
    waiting = waiting + 1
  end
end
return {waiting, active, redis.call('SCARD', KEYS[3]), failed, redis.call('SCARD', KEYS[5])}
",
    )
});

/// Up to ARGV[2] jobs in state ARGV[1], each `{id, payload or nil, flat meta hash}`.
static JOBS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local state, limit, inflight, meta = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local ids = {}
if state == 'waiting' or state == 'failed' then
  if state == 'waiting' then ids = redis.call('LRANGE', KEYS[1], 0, limit - 1) end
  for _, id in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
    if #ids >= limit then break end
    local failed = redis.call('HGET', meta .. ':' .. id, 'status') == 'Failed'
    if failed == (state == 'failed') then ids[#ids + 1] = id end
  end
elseif state == 'active' then
  for _, worker in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    for _, id in ipairs(redis.call('SMEMBERS', inflight .. ':' .. worker)) do
      ids[#ids + 1] = id
    end
  end
  table.sort(ids)
else
  local set = KEYS[3]
  if state == 'dead' then set = KEYS[5] end
  local items = {}
  for _, id in ipairs(redis.call('SMEMBERS', set)) do
    items[#items + 1] = {id, tonumber(redis.call('HGET', meta .. ':' .. id, 'done_at')) or 0}
  end
  table.sort(items, function(a, b)
    if a[2] ~= b[2] then return a[2] > b[2] end
    return a[1] > b[1]
  end)
  for i, item in ipairs(items) do ids[i] = item[1] end
end
local out = {}
for i, id in ipairs(ids) do
  if i > limit then break end
  out[i] = {id, redis.call('HGET', KEYS[6], id), redis.call('HGETALL', meta .. ':' .. id)}
end
return out
",
    )
});

/// Moves ARGV[1] from the dead set to the end of the waiting list, meta as a fresh job's, and
/// wakes the workers (the signal list, as apalis' `batch_push.lua` does, and our wake-up channel
/// ARGV[3], with the queue's name ARGV[4]). 0 if it was not dead.
static RETRY_DEAD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local id = ARGV[1]
if redis.call('SISMEMBER', KEYS[1], id) == 0 or redis.call('HEXISTS', KEYS[4], id) == 0 then
  return 0
end
redis.call('SREM', KEYS[1], id)
local meta = ARGV[2] .. ':' .. id
redis.call('HSET', meta, 'status', 'Pending', 'attempts', 0)
redis.call('HDEL', meta, 'result', 'done_at')
redis.call('RPUSH', KEYS[2], id)
redis.call('DEL', KEYS[3])
redis.call('LPUSH', KEYS[3], 1)
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
",
    )
});

/// Deletes the ids ARGV[2..] that are still in the set KEYS[1], with their payload (hash KEYS[2])
/// and meta (prefix ARGV[1]), so nothing of them is left behind. Returns how many it deleted.
static DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local meta, deleted = ARGV[1], 0
for i = 2, #ARGV do
  local id = ARGV[i]
  if redis.call('SREM', KEYS[1], id) == 1 then
    redis.call('HDEL', KEYS[2], id)
    redis.call('DEL', meta .. ':' .. id)
    redis.call('HDEL', meta .. ':result', id)
    deleted = deleted + 1
  end
end
return deleted
",
    )
});

/// Ids per `SSCAN` page and per `DELETE` call: each Redis call stays short however large the set.
const TRIM_CHUNK: usize = 500;

fn storage(e: ::redis::RedisError) -> BusError {
    BusError::Storage(e.to_string())
}

impl RedisBus {
    pub(super) async fn stats(&self, all: &mut [QueueStats]) -> Result<(), BusError> {
        let mut conn = RedisConnection::new(self.conn.clone());
        for stats in all.iter_mut() {
            let config = self.config(&stats.queue);
            let [waiting, active, completed, failed, dead]: [u64; 5] = STATS
                .key(config.active_jobs_list())
                .key(config.workers_set())
                .key(config.done_jobs_set())
                .key(config.scheduled_jobs_set())
                .key(config.dead_jobs_set())
                .arg(config.inflight_jobs_set())
                .arg(config.job_meta_hash())
                .invoke_async(&mut conn)
                .await
                .map_err(storage)?;
            stats.waiting = waiting;
            stats.active = active;
            stats.completed = completed;
            stats.failed = failed;
            stats.dead = dead;
        }
        Ok(())
    }

    pub(super) async fn jobs(
        &self,
        queue: &str,
        state: JobState,
        limit: usize,
    ) -> Result<Vec<JobView>, BusError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let config = self.config(queue);
        let mut conn = RedisConnection::new(self.conn.clone());
        let rows: Vec<(String, Option<Vec<u8>>, Vec<String>)> = JOBS
            .key(config.active_jobs_list())
            .key(config.workers_set())
            .key(config.done_jobs_set())
            .key(config.scheduled_jobs_set())
            .key(config.dead_jobs_set())
            .key(config.job_data_hash())
            .arg(state.as_str())
            .arg(limit)
            .arg(config.inflight_jobs_set())
            .arg(config.job_meta_hash())
            .invoke_async(&mut conn)
            .await
            .map_err(storage)?;
        Ok(rows
            .into_iter()
            .map(|(id, payload, meta)| {
                let mut job = job_view(id, payload.as_deref(), &meta);
                // Workers do not mark the jobs they take (see `RedisBus::config`): a job in a
                // worker's hands still reads `Pending`. `Queued` is what SQLite calls it.
                if state == JobState::Active && job.status == "Pending" {
                    job.status = "Queued".to_owned();
                }
                job
            })
            .collect())
    }

    pub(super) async fn retry_dead(&self, queue: &str, job_id: &str) -> Result<bool, BusError> {
        let config = self.config(queue);
        let mut conn = RedisConnection::new(self.conn.clone());
        let moved: u32 = RETRY_DEAD
            .key(config.dead_jobs_set())
            .key(config.active_jobs_list())
            .key(config.signal_list())
            .key(config.job_data_hash())
            .arg(job_id)
            .arg(config.job_meta_hash())
            .arg(self.wakeup_channel())
            .arg(queue)
            .invoke_async(&mut conn)
            .await
            .map_err(storage)?;
        Ok(moved == 1)
    }

    /// Trims the done and dead sets of every queue of the subscription table.
    pub(super) async fn trim(
        &self,
        completed_keep: usize,
        dead_keep: usize,
    ) -> Result<u64, BusError> {
        let mut deleted = 0;
        for (event_type, consumer) in super::subscriptions::queues() {
            let config = self.config(&super::subscriptions::queue_name(event_type, consumer));
            deleted += self
                .trim_set(&config, &config.done_jobs_set(), completed_keep)
                .await?;
            deleted += self
                .trim_set(&config, &config.dead_jobs_set(), dead_keep)
                .await?;
        }
        Ok(deleted)
    }

    /// Keeps the newest `keep` jobs of `set`, newest by id (ids sort in push order, see
    /// [`super::job_id`]). The set is read page by page and sorted here, and the rest deleted a
    /// chunk per script call: a set that grew to hundreds of thousands (a burst between two trims)
    /// never blocks Redis for the other clients the way one script sorting it all would.
    async fn trim_set(
        &self,
        config: &apalis_redis::Config,
        set: &str,
        keep: usize,
    ) -> Result<u64, BusError> {
        let mut conn = RedisConnection::new(self.conn.clone());
        let size: usize = ::redis::cmd("SCARD")
            .arg(set)
            .query_async(&mut conn)
            .await
            .map_err(storage)?;
        if size <= keep {
            return Ok(0);
        }
        let mut ids: Vec<String> = Vec::with_capacity(size);
        let mut cursor: u64 = 0;
        loop {
            let (next, page): (u64, Vec<String>) = ::redis::cmd("SSCAN")
                .arg(set)
                .arg(cursor)
                .arg("COUNT")
                .arg(TRIM_CHUNK)
                .query_async(&mut conn)
                .await
                .map_err(storage)?;
            ids.extend(page);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        // SSCAN may return an id twice.
        ids.sort_unstable();
        ids.dedup();
        let excess = ids.len().saturating_sub(keep);
        let mut deleted = 0;
        for chunk in ids[..excess].chunks(TRIM_CHUNK) {
            deleted += DELETE
                .key(set)
                .key(config.job_data_hash())
                .arg(config.job_meta_hash())
                .arg(chunk)
                .invoke_async::<u64>(&mut conn)
                .await
                .map_err(storage)?;
        }
        Ok(deleted)
    }
}

fn job_view(id: String, payload: Option<&[u8]>, meta: &[String]) -> JobView {
    let field = |name: &str| {
        meta.chunks_exact(2)
            .find(|pair| pair[0] == name)
            .map(|pair| pair[1].as_str())
    };
    let number = |name: &str| field(name).and_then(|v| v.parse::<u64>().ok());
    JobView {
        status: field("status").unwrap_or("Unknown").to_owned(),
        attempts: number("attempts").unwrap_or_default(),
        max_attempts: number("max_attempts"),
        payload: payload.map_or(serde_json::Value::Null, payload_json),
        last_error: last_error(field("result")),
        // apalis-redis keeps no run time for jobs that are not scheduled.
        run_at: None,
        done_at: unix_time(field("done_at").and_then(|v| v.parse().ok())),
        id,
    }
}
