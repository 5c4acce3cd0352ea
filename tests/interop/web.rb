#!/usr/bin/env ruby
# frozen_string_literal: true
#
# web.rb - serve Sidekiq 6.4.1's Web UI (Sidekiq::Web, a Rack app) over WEBrick, the way a
# Ruby application mounts it, so difo's interop tests can fetch its pages.
#
# Usage: ruby web.rb REDIS_URL PORT
#
# Listens on 127.0.0.1:PORT until killed. Sidekiq::Web's CSRF protection needs a Rack
# session, hence the cookie session middleware in front of it.

require "rack"
require "rack/session/cookie" unless defined?(Rack::Session::Cookie)
require "webrick"
require "rack/handler/webrick"

begin
  require "sidekiq"
  require "sidekiq/web"
rescue LoadError => e
  warn "the sidekiq gem is not loadable (#{e.message}); on Debian: apt-get install ruby-sidekiq"
  exit 2
end

Redis.silence_deprecations = true if Redis.respond_to?(:silence_deprecations=)

url, port = ARGV
abort("usage: ruby web.rb REDIS_URL PORT") unless url && port

Sidekiq.logger.level = Logger::WARN
Sidekiq.configure_client { |config| config.redis = {url: url, size: 5} }

app = Rack::Builder.new do
  use Rack::Session::Cookie, secret: "difo-interop-" + "x" * 64, same_site: true
  run Sidekiq::Web
end

Rack::Handler::WEBrick.run(
  app, Host: "127.0.0.1", Port: Integer(port),
  Logger: WEBrick::Log.new($stderr, WEBrick::Log::WARN), AccessLog: []
)
