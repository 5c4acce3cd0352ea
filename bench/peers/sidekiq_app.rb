# Sidekiq (Ruby): `sidekiq -r ./sidekiq_app.rb -c 10 -q bench`, two processes on two cores.
# The same unit as the Python systems: one INCR (and the latency RPUSH when timed).
# Sidekiq's own bin/sidekiqload is not run: it hard-codes Redis on 6379 behind toxiproxy
# and flushes db 13 there; this file keeps its shape (a no-op worker, push_bulk fill):
# EmptyWorker is sidekiqload's LoadWorker, the "empty unit" row of bench/compare.py.
require "sidekiq"
require "json"

Sidekiq.configure_server { |config| config.logger.level = Logger::WARN }
Sidekiq.configure_client { |config| config.logger.level = Logger::WARN }

class IncrWorker
  include Sidekiq::Worker
  sidekiq_options queue: "bench"

  def perform(sent_at)
    Sidekiq.redis do |conn|
      conn.rpush("bench:latency", (Time.now.to_f - sent_at).to_s) if sent_at > 0
      conn.incr("bench:count")
    end
  end
end

class EmptyWorker
  include Sidekiq::Worker
  sidekiq_options queue: "bench"

  def perform(sent_at); end
end

if $PROGRAM_NAME == __FILE__
  mode, first, second = ARGV
  clock = -> { Process.clock_gettime(Process::CLOCK_MONOTONIC) }
  case mode
  when "send"
    100.times { IncrWorker.perform_async(0) }
    started = clock.call
    first.to_i.times { IncrWorker.perform_async(0) }
  when "fill"
    started = clock.call
    count = first.to_i
    worker = second == "empty" ? EmptyWorker : IncrWorker
    (0...count).step(1000) do |start|
      Sidekiq::Client.push_bulk("class" => worker, "args" => Array.new([1000, count - start].min) { [0] })
    end
  when "paced"
    IncrWorker.perform_async(0) # untimed, as common.paced: the connection is made
    started = clock.call
    rate = first.to_f
    second.to_i.times do |index|
      delay = started + index / rate - clock.call
      sleep(delay) if delay > 0
      IncrWorker.perform_async(Time.now.to_f)
    end
  end
  puts JSON.generate({"seconds" => clock.call - started})
end
