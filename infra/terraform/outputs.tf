output "nats_url" {
  description = "The NATS URL every role is given (inside the cluster)"
  value       = local.nats_url
}

output "api_url" {
  description = "The Management API"
  value       = "${var.api_tls_secret == null ? "http" : "https"}://${var.api_domain}/api/v1"
}

output "agent_server" {
  description = "What agents are started with: tunnox client --server <this>"
  value       = "${var.edge_domain}:${local.control_port}"
}

output "edge_service" {
  description = "The edges' LoadBalancer Service (kubectl -n <namespace> get svc <this> for its address)"
  value       = kubernetes_service_v1.edge.metadata[0].name
}
