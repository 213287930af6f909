variable "kubeconfig_path" {
  description = "kubeconfig file; null: the providers' defaults (KUBE_CONFIG_PATH, in-cluster)"
  type        = string
  default     = null
}

variable "kube_context" {
  description = "kubeconfig context; null: the current one"
  type        = string
  default     = null
}

variable "namespace" {
  description = "Namespace of the Tunnox workloads, NATS and PostgreSQL"
  type        = string
  default     = "tunnox"
}

variable "name" {
  description = "Instance name: prefixes every object and is the app.kubernetes.io/instance label"
  type        = string
  default     = "tunnox"
}

variable "image" {
  description = "The Tunnox image (Dockerfile at the repository root), e.g. registry.example.com/tunnox:0.1.0; one image for every role"
  type        = string
}

variable "image_pull_secrets" {
  description = "Names of docker-registry secrets in the namespace for a private registry"
  type        = list(string)
  default     = []
}

# --- domains ----------------------------------------------------------------------------------------

variable "edge_domain" {
  description = "DNS name agents use to reach the edges' load balancer (tunnox client --server EDGE_DOMAIN:8080); set on the Service for external-dns"
  type        = string
}

variable "edge_tls_secret" {
  description = "Name of a kubernetes.io/tls Secret in the namespace (tls.crt, tls.key) with the edges' certificate for edge_domain, e.g. issued by cert-manager: every edge serves the same one on the control and WebSocket ports (agents verify it against the system CAs, --ca or --fingerprint)"
  type        = string
  validation {
    condition     = length(var.edge_tls_secret) > 0
    error_message = "edge_tls_secret must name a kubernetes.io/tls Secret."
  }
}

variable "api_domain" {
  description = "DNS name of the Management API (an Ingress rule)"
  type        = string
}

variable "api_ingress_class" {
  description = "IngressClass of the Management API's Ingress"
  type        = string
  default     = "nginx"
}

variable "api_tls_secret" {
  description = "TLS secret (tls.crt/tls.key) for api_domain; null: the Ingress serves plain HTTP (only behind another TLS terminator)"
  type        = string
  default     = null
}

variable "api_ingress_annotations" {
  description = "Extra annotations of the API Ingress (e.g. cert-manager.io/cluster-issuer)"
  type        = map(string)
  default     = {}
}

variable "edge_service_annotations" {
  description = "Extra annotations of the edges' LoadBalancer Service (cloud LB type, e.g. service.beta.kubernetes.io/aws-load-balancer-type = nlb)"
  type        = map(string)
  default     = {}
}

# --- secrets ----------------------------------------------------------------------------------------

variable "cluster_secret" {
  description = "Shared by every edge: authenticates the node-to-node bridge and derives the session token key (TUNNOX_CLUSTER_SECRET; at least 16 characters, e.g. openssl rand -hex 24)"
  type        = string
  sensitive   = true
  validation {
    condition     = length(var.cluster_secret) >= 16
    error_message = "cluster_secret must be at least 16 characters (tunnox refuses shorter ones)."
  }
}

variable "api_key" {
  description = "The Management API's admin key (TUNNOX_API_KEY; at least 16 characters)"
  type        = string
  sensitive   = true
  validation {
    condition     = length(var.api_key) >= 16
    error_message = "api_key must be at least 16 characters (tunnox refuses shorter ones)."
  }
}

# --- workloads --------------------------------------------------------------------------------------

variable "api_replicas" {
  description = "Management API processes (stateless; any number)"
  type        = number
  default     = 2
}

variable "projector_replicas" {
  description = "Projector processes (each event applies once among them; more than one is for availability)"
  type        = number
  default     = 2
}

variable "edge_min_replicas" {
  description = "Edges at least (HPA minimum)"
  type        = number
  default     = 2
}

variable "edge_max_replicas" {
  description = "Edges at most (HPA maximum)"
  type        = number
  default     = 10
}

variable "edge_cpu_target_percent" {
  description = "HPA target: average CPU utilization of the edges, percent of their request"
  type        = number
  default     = 70
}

variable "drain_timeout_seconds" {
  description = "tunnox edge --drain-timeout: on SIGTERM, how long running tunnels may go on before they are reset"
  type        = number
  default     = 30
}

variable "prestop_delay_seconds" {
  description = "Before SIGTERM, an edge pod waits this long so the load balancer stops sending it new visitors first"
  type        = number
  default     = 5
}

variable "public_port_min" {
  description = "First public TCP port (tunnox api --public-port-range; every port of the range is a port of the edges' LoadBalancer)"
  type        = number
  default     = 20000
}

variable "public_port_max" {
  description = "Last public TCP port; keep the range within what the cloud's load balancer allows per Service"
  type        = number
  default     = 20019
  validation {
    condition     = var.public_port_max >= var.public_port_min && var.public_port_max - var.public_port_min < 200
    error_message = "public_port_max must be >= public_port_min, and the range under 200 ports (each is a Service port)."
  }
}

variable "allow_anonymous" {
  description = "Let agents register without credentials (false: tunnox edge --no-anonymous)"
  type        = bool
  default     = false
}

variable "stream_replicas" {
  description = "JetStream replicas of the event stream, the state stream and the KV buckets tunnox creates (--stream-replicas); the NATS cluster size"
  type        = number
  default     = 3
}

variable "resources" {
  description = "CPU and memory requests/limits per role"
  type = map(object({
    cpu_request    = string
    memory_request = string
    cpu_limit      = optional(string)
    memory_limit   = string
  }))
  default = {
    edge      = { cpu_request = "500m", memory_request = "256Mi", memory_limit = "1Gi" }
    api       = { cpu_request = "250m", memory_request = "256Mi", memory_limit = "512Mi" }
    projector = { cpu_request = "250m", memory_request = "256Mi", memory_limit = "512Mi" }
  }
}

# --- NATS and PostgreSQL ----------------------------------------------------------------------------

variable "nats_chart_version" {
  description = "Version of the official NATS Helm chart (https://nats-io.github.io/k8s/helm/charts/)"
  type        = string
  default     = "1.2.8"
}

variable "nats_image_tag" {
  description = "nats-server image tag; sync_interval needs 2.10 or newer"
  type        = string
  default     = "2.11.4-alpine"
}

variable "nats_storage_size" {
  description = "JetStream file store per NATS server (PVC size)"
  type        = string
  default     = "20Gi"
}

variable "storage_class" {
  description = "StorageClass of the NATS and PostgreSQL volumes; null: the cluster's default"
  type        = string
  default     = null
}

variable "cnpg_chart_version" {
  description = "Version of the CloudNativePG operator chart (https://cloudnative-pg.github.io/charts)"
  type        = string
  default     = "0.22.1"
}

variable "install_cnpg_operator" {
  description = "Install the CloudNativePG operator (false: one is already running in the cluster)"
  type        = bool
  default     = true
}

variable "postgres_instances" {
  description = "PostgreSQL instances (one primary, the rest streaming replicas with automatic failover)"
  type        = number
  default     = 3
}

variable "postgres_storage_size" {
  description = "Volume per PostgreSQL instance"
  type        = string
  default     = "20Gi"
}

variable "postgres_backup" {
  description = "Continuous backup (WAL archive and base backups) to object storage through CloudNativePG's barmanObjectStore; null: none. The secret holds ACCESS_KEY_ID and ACCESS_SECRET_KEY."
  type = object({
    destination_path = string # e.g. s3://my-bucket/tunnox
    endpoint_url     = optional(string)
    secret_name      = string
    retention        = optional(string, "30d")
    schedule         = optional(string, "0 0 3 * * *") # daily base backup, 03:00 (six-field cron)
  })
  default = null
}
