"""The WebRTC gateway (FastAPI signalling + aiortc sessions). Never imports torch.

Reading order, which is also the per-frame path (API in docs/api.md, design in docs/architecture.md):
  config.py          ServerConfig: every setting, from F2F_* variables and `f2f serve` flags
  app.py             HTTP routes: POST /v1/sessions (offer -> answer), GET/PATCH/DELETE, say, events, health
  security.py        who may call and how much: bearer tokens, rate and size limits, CORS, response headers
  gateway.py         shared state: the engine behind the micro-batcher, the session cap, tokens, the face pool
  session.py         one session: peer connection, tracks, tasks, watchdog, close() that frees everything
  rtc.py             ICE configuration, offer validation, codec preference, liveness probe
  partner_input.py   partner video -> newest frame -> face mesh + crop -> guest encoder -> guest context
  host_audio.py      host audio -> 16 kHz (resample.py) -> session timeline -> log-mel; delayed audio out
  avatar_loop.py     the 25 fps clock: mel window + guest context + history + noise + λ -> engine.step
  output_tracks.py   host video / host audio tracks handed to aiortc's encoders, pts from the clock
  data_channel.py    one `motion` JSON message per frame
  frames.py          the typed things that flow (HostFrame, GuestObservation, ...) and the session clock
  metrics.py         Prometheus metrics, per-stage latency histograms
  speech.py          text -> speech with espeak-ng for `say`
  tasks.py           background tasks that log their errors and are cancelled and awaited on close
  cli.py             `f2f serve` / `f2f client` argument parsers
"""
