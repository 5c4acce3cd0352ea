#!/usr/bin/env ruby
# frozen_string_literal: true
#
# sidekiq.rb - Sidekiq 6.4.1's own Ruby client and API, driven by difo's interop tests.
#
# Usage: ruby sidekiq.rb REDIS_URL COMMAND < REQUEST_JSON
#
#   push    {"items": [item, ...]}: Sidekiq::Client.push(item) for each item, or
#           Sidekiq::Client.push_bulk(item) when the item has "bulk": true.
#           -> {"jids": [[jid, ...] per item], "stored": {jid: raw payload as stored}}
#   view    {}: what Sidekiq's API sees: stats, history, queues, the three sets,
#           processes and busy workers. -> {..., "errors": [sections that raised]}
#   act     {"where": "retry" | "schedule" | "dead" | "queue:NAME", "jid": JID,
#            "action": "delete" | "retry" | "kill" | "add_to_queue" | "reschedule",
#            "at": EPOCH (reschedule only)} -> {"found": bool}
#   signal  {"identity": ID, "action": "quiet" | "stop" | "dump_threads"}: Sidekiq::Process
#           #quiet!, #stop! or #dump_threads of the process ProcessSet lists under ID.
#           -> {"found": bool}
#
# Prints one JSON object on stdout. Each section of `view` is read inside its own
# rescue, so data Sidekiq cannot read shows up as an error naming the section.

require "json"
require "time"

begin
  require "sidekiq"
  require "sidekiq/api"
rescue LoadError => e
  warn "the sidekiq gem is not loadable (#{e.message}); on Debian: apt-get install ruby-sidekiq"
  exit 2
end

Redis.silence_deprecations = true if Redis.respond_to?(:silence_deprecations=)

url, command = ARGV
abort("usage: ruby sidekiq.rb REDIS_URL push|view|act|signal < REQUEST_JSON") unless url && command
request = JSON.parse($stdin.read.then { |text| text.strip.empty? ? "{}" : text })

Sidekiq.logger.level = Logger::WARN
Sidekiq.configure_client { |config| config.redis = {url: url, size: 2} }

ERRORS = []

def section(name)
  yield
rescue Exception => e # rubocop:disable Lint/RescueException
  ERRORS << name
  {"error" => "#{e.class}: #{e.message}"[0, 500], "where" => (e.backtrace || []).first(3)}
end

def iso(time)
  time&.utc&.iso8601(6)
end

def job_view(record)
  view = {
    "jid" => record.jid, "class" => record.klass, "queue" => record.queue,
    "args" => record.args, "item" => record.item, "value" => record.value,
    "display_class" => section("display_class") { record.display_class },
    "display_args" => section("display_args") { record.display_args },
    "tags" => section("tags") { record.tags },
    "created_at_iso" => section("created_at") { iso(record.created_at) },
    "enqueued_at_iso" => section("enqueued_at") { iso(record.enqueued_at) },
    "latency" => section("latency") { record.latency }
  }
  if record.item.key?("error_backtrace")
    view["backtrace"] = section("error_backtrace") { record.error_backtrace }
  end
  if record.is_a?(Sidekiq::SortedEntry)
    view["score"] = record.score
    view["at_iso"] = section("at") { iso(record.at) }
    view["error?"] = record.error?
  end
  view
end

def find(where, jid)
  if where.start_with?("queue:")
    Sidekiq::Queue.new(where.delete_prefix("queue:")).find_job(jid)
  else
    {"retry" => Sidekiq::RetrySet, "schedule" => Sidekiq::ScheduledSet,
     "dead" => Sidekiq::DeadSet}.fetch(where).new.find_job(jid)
  end
end

def stored_payload(conn, jid, queue, scheduled)
  if scheduled
    conn.zrange("schedule", 0, -1).find { |raw| JSON.parse(raw)["jid"] == jid }
  else
    conn.lrange("queue:#{queue}", 0, -1).find { |raw| JSON.parse(raw)["jid"] == jid }
  end
end

out = case command
when "push"
  jids = request.fetch("items").map do |item|
    bulk = item.delete("bulk")
    scheduled = item.key?("at")
    pushed = bulk ? Sidekiq::Client.push_bulk(item) : [Sidekiq::Client.push(item)].compact
    pushed.map { |jid| [jid, item["queue"] || "default", scheduled] }
  end
  stored = {}
  Sidekiq.redis do |conn|
    jids.flatten(1).each do |jid, queue, scheduled|
      stored[jid] = stored_payload(conn, jid, queue, scheduled)
    end
  end
  {"jids" => jids.map { |list| list.map(&:first) }, "stored" => stored}
when "view"
  view = {"version" => Sidekiq::VERSION, "now" => Time.now.to_f}
  view["stats"] = section("stats") do
    stats = Sidekiq::Stats.new
    %w[processed failed enqueued scheduled_size retry_size dead_size processes_size
       workers_size default_queue_latency queues].to_h { |name| [name, stats.public_send(name)] }
  end
  view["history"] = section("history") do
    history = Sidekiq::Stats::History.new(3)
    {"processed" => history.processed, "failed" => history.failed}
  end
  view["queues"] = section("queues") do
    Sidekiq::Queue.all.to_h do |queue|
      [queue.name, {"size" => queue.size, "latency" => queue.latency,
                    "jobs" => queue.map { |record| job_view(record) }}]
    end
  end
  {"scheduled" => Sidekiq::ScheduledSet, "retries" => Sidekiq::RetrySet,
   "dead" => Sidekiq::DeadSet}.each do |name, kind|
    view[name] = section(name) do
      set = kind.new
      {"size" => set.size, "jobs" => set.map { |entry| job_view(entry) }}
    end
  end
  view["processes"] = section("processes") do
    Sidekiq::ProcessSet.new.map do |process|
      attrs = %w[identity hostname pid tag concurrency queues labels started_at busy beat quiet
                 rss rtt_us].to_h { |name| [name, process[name]] }
      attrs["labels"] = process.labels
      attrs["stopping?"] = process.stopping?
      attrs["started_at_iso"] = section("started_at") { iso(Time.at(process["started_at"])) }
      attrs
    end
  end
  view["workers"] = section("workers") do
    workers = Sidekiq::Workers.new
    rows = workers.map do |process_id, thread_id, work|
      record = Sidekiq::JobRecord.new(work["payload"])
      {"process" => process_id, "thread" => thread_id, "queue" => work["queue"],
       "run_at" => work["run_at"], "run_at_iso" => iso(Time.at(work["run_at"])),
       "jid" => record.jid, "class" => record.klass, "args" => record.args}
    end
    {"size" => workers.size, "list" => rows}
  end
  view["errors"] = ERRORS.uniq
  view
when "act"
  record = find(request.fetch("where"), request.fetch("jid"))
  action = request.fetch("action")
  if record && action == "reschedule"
    record.reschedule(request.fetch("at"))
  elsif record
    record.public_send(action)
  end
  {"found" => !record.nil?}
when "signal"
  process = Sidekiq::ProcessSet.new.find { |candidate| candidate.identity == request.fetch("identity") }
  process&.public_send({"quiet" => :quiet!, "stop" => :stop!, "dump_threads" => :dump_threads}.fetch(request.fetch("action")))
  {"found" => !process.nil?}
else
  abort("unknown command #{command.inspect}: push, view, act or signal")
end
puts JSON.generate(out)
