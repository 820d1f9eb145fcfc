"""An OTLP/HTTP metrics receiver in a lab node: the "backend" the collector forwards to."""

from __future__ import annotations

import gzip
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)

from .cluster import LabCluster


class OtlpSink:
    """Listens on ``node``'s lab address; keeps the pairs of ``latency_between_nodes`` it got
    and every Authorization header it saw."""

    def __init__(self, cluster: LabCluster, node: str, port: int) -> None:
        self.pairs: set[tuple[str, str]] = set()
        self.authorizations: set[str] = set()
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                sink._record(self.headers.get("Authorization", ""), body)
                reply = ExportMetricsServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                pass

        listener = cluster.lab.socket(node, socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((cluster.lab.address(node), port))
        listener.listen(16)
        self._server = ThreadingHTTPServer(listener.getsockname(), Handler, bind_and_activate=False)
        self._server.socket.close()
        self._server.socket = listener
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _record(self, authorization: str, body: bytes) -> None:
        request = ExportMetricsServiceRequest.FromString(body)
        found = set()
        for resource in request.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name != "latency_between_nodes":
                        continue
                    for point in metric.gauge.data_points:
                        labels = {a.key: a.value.string_value for a in point.attributes}
                        found.add((labels.get("from", ""), labels.get("to", "")))
        with self._lock:
            self.authorizations.add(authorization)
            self.pairs |= found

    def latency_pairs(self) -> set[tuple[str, str]]:
        with self._lock:
            return set(self.pairs)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
