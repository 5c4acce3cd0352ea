# frozen_string_literal: true
#
# worker.rb - the Ruby side of the side-by-side tests: a Sidekiq 6.4.1 worker class that a
# real `sidekiq` process runs, next to a difo server on the same Redis.
#
# Usage: REDIS_URL=... sidekiq -q rbonly -c 2 -t 5 -r ./worker.rb
#
# RubyRecorder.perform(tag, n) appends {"jid", "n", "pid", "time"} as JSON to the list
# rb:TAG, then raises when tag is "fail" (the tests push those with retry: false, so the
# failure is counted and nothing is kept).

require "json"
require "sidekiq"

Redis.silence_deprecations = true if Redis.respond_to?(:silence_deprecations=)

# Poll the schedule and retry sets about once a second, from 0-5 s after start (by default
# Sidekiq waits 10-15 s before its first poll, then polls every 5 s per process).
Sidekiq.options[:poll_interval_average] = 1

class RubyRecorder
  include Sidekiq::Worker
  sidekiq_options retry: false

  def perform(tag, number)
    record = {"jid" => jid, "n" => number, "pid" => ::Process.pid, "time" => Time.now.to_f}
    Sidekiq.redis { |conn| conn.rpush("rb:#{tag}", JSON.generate(record)) }
    raise ArgumentError, "failing on purpose (#{number})" if tag == "fail"
  end
end
