"""`f2f curate label OUT_DIR`: the small labelling page of the recipe, served on 127.0.0.1 only.

Two tasks: play a diarized voice segment and click host / not host; look at a face crop from a
host-speech window and click host / not host. Labels are saved at once (atomically) into
OUT_DIR/labels/voice.json and faces.json; rerunning `f2f curate` then goes on.
"""

from __future__ import annotations

import io
import json
import wave
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np

from pipeline.curate.labels import LabelStore
from pipeline.curate.media import AUDIO_RATE, MediaError, read_audio

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>f2f curate: label the host</title>
<style>body{font-family:sans-serif;max-width:900px;margin:2em auto}.item{display:flex;gap:1em;align-items:center;
padding:.4em;border-bottom:1px solid #ddd}.done{opacity:.45}img{height:96px}button{padding:.4em 1em}</style></head>
<body><h1>Label the host</h1><p>Click <b>host</b> or <b>not host</b> for each item; labels save immediately.
Then run <code>f2f curate</code> again.</p><h2>Voices</h2><div id="voice"></div><h2>Faces</h2><div id="face"></div>
<script>
async function post(kind,key,value,row){const r=await fetch('/api/label',{method:'POST',headers:{'Content-Type':'application/json'},
 body:JSON.stringify({kind:kind,key:key,host:value})});if(r.ok){row.classList.add('done');row.querySelector('.v').textContent=value?'host':'not host';}}
function item(kind,c,labels,media){const row=document.createElement('div');row.className='item';row.appendChild(media);
 const v=document.createElement('span');v.className='v';if(c.key in labels){v.textContent=labels[c.key]?'host':'not host';row.classList.add('done');}
 for(const [text,val] of [['host',true],['not host',false]]){const b=document.createElement('button');b.textContent=text;b.onclick=()=>post(kind,c.key,val,row);row.appendChild(b);}
 row.appendChild(v);return row;}
fetch('/api/candidates').then(r=>r.json()).then(d=>{
 for(const c of d.voice){const a=document.createElement('audio');a.controls=true;a.preload='none';a.src='/audio?key='+encodeURIComponent(c.key);
  document.getElementById('voice').appendChild(item('voice',c,d.labels.voice,a));}
 for(const c of d.face){const i=document.createElement('img');i.src='/face?key='+encodeURIComponent(c.key);
  document.getElementById('face').appendChild(item('faces',c,d.labels.faces,i));}});
</script></body></html>"""

MAX_BODY = 4096


class LabelServer:
    def __init__(self, out_dir: Path, raw_dir: Path | None = None):
        self.out_dir = out_dir
        self.store = LabelStore(out_dir / "labels")
        self.videos = self._videos(raw_dir)

    def _videos(self, raw_dir: Path | None) -> dict[str, Path]:
        from pipeline.curate.pipeline import discover

        if raw_dir is None:
            return {}
        return {e.name: e.video for e in discover(raw_dir)}

    def candidates(self) -> dict:
        return {"voice": self.store.candidates("voice"), "face": self.store.candidates("face"),
                "labels": {"voice": self.store.labels("voice"), "faces": self.store.labels("faces")}}

    def audio_wav(self, key: str) -> bytes:
        candidate = next((c for c in self.store.candidates("voice") if c["key"] == key), None)
        if candidate is None or candidate["episode"] not in self.videos:
            raise KeyError(key)
        audio = read_audio(self.videos[candidate["episode"]], candidate["start"], candidate["end"] - candidate["start"])
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(AUDIO_RATE)
            out.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
        return buffer.getvalue()

    def face_jpeg(self, key: str) -> bytes:
        path = (self.store.folder / "faces" / f"{Path(key).name}.jpg")
        if not path.is_file():
            raise KeyError(key)
        return path.read_bytes()

    def label(self, body: dict) -> None:
        kind, key, host = body.get("kind"), body.get("key"), body.get("host")
        if kind not in ("voice", "faces") or not isinstance(key, str) or not isinstance(host, bool):
            raise ValueError("expected {kind: voice|faces, key: str, host: bool}")
        known = {c["key"] for c in self.store.candidates("voice" if kind == "voice" else "face")}
        if key not in known:
            raise KeyError(key)
        self.store.set_label(kind, key, host)

    def handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet: a person is clicking
                pass

            def _send(self, status, body: bytes, content_type: str):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _error(self, status, message):
                self._send(status, json.dumps({"error": message}).encode(), "application/json")

            def do_GET(self):
                url = urlparse(self.path)
                key = parse_qs(url.query).get("key", [""])[0]
                try:
                    if url.path == "/":
                        self._send(HTTPStatus.OK, PAGE.encode(), "text/html; charset=utf-8")
                    elif url.path == "/api/candidates":
                        self._send(HTTPStatus.OK, json.dumps(server.candidates()).encode(), "application/json")
                    elif url.path == "/audio":
                        self._send(HTTPStatus.OK, server.audio_wav(key), "audio/wav")
                    elif url.path == "/face":
                        self._send(HTTPStatus.OK, server.face_jpeg(key), "image/jpeg")
                    else:
                        self._error(HTTPStatus.NOT_FOUND, "not found")
                except KeyError:
                    self._error(HTTPStatus.NOT_FOUND, f"unknown key {key!r}")
                except MediaError as error:
                    self._error(HTTPStatus.INTERNAL_SERVER_ERROR, str(error))

            def do_POST(self):
                if urlparse(self.path).path != "/api/label":
                    return self._error(HTTPStatus.NOT_FOUND, "not found")
                length = int(self.headers.get("Content-Length") or 0)
                if length <= 0 or length > MAX_BODY:
                    return self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE if length > MAX_BODY else HTTPStatus.BAD_REQUEST,
                                       "body missing or too large")
                try:
                    server.label(json.loads(self.rfile.read(length)))
                except (ValueError, json.JSONDecodeError) as error:
                    return self._error(HTTPStatus.BAD_REQUEST, str(error))
                except KeyError as error:
                    return self._error(HTTPStatus.NOT_FOUND, f"unknown candidate {error}")
                self._send(HTTPStatus.OK, b'{"ok": true}', "application/json")

        return Handler

    def serve(self, port: int = 8765) -> ThreadingHTTPServer:
        return ThreadingHTTPServer(("127.0.0.1", port), self.handler())
