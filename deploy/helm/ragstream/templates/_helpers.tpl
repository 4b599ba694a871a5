{{/* Names and labels. */}}
{{- define "ragstream.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ragstream.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "ragstream.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "ragstream.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ragstream.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ragstream.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ragstream.labels" -}}
{{ include "ragstream.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: ragstream
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "ragstream.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "ragstream.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "ragstream.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Environment shared by every ragstream container: settings as RAGSTREAM_* variables, secrets by reference.
     Call with (dict "root" $ "service" NAME "gatewaySecrets" BOOL). */}}
{{- define "ragstream.env" -}}
{{- $root := .root -}}
- name: RAGSTREAM_KAFKA__BOOTSTRAP_SERVERS
  value: {{ $root.Values.kafka.bootstrapServers | quote }}
{{- include "ragstream.kafkaSecurityEnv" $root }}
- name: RAGSTREAM_WEAVIATE__URL
  value: {{ $root.Values.weaviate.url | quote }}
- name: RAGSTREAM_WEAVIATE__GRPC_PORT
  value: {{ $root.Values.weaviate.grpcPort | quote }}
- name: RAGSTREAM_LLM__BASE_URL
  value: {{ $root.Values.llm.baseUrl | quote }}
- name: RAGSTREAM_TELEMETRY__SERVICE_NAME
  value: {{ printf "ragstream-%s" .service | quote }}
{{- range $k, $v := $root.Values.config }}
- name: {{ printf "RAGSTREAM_%s" $k }}
  value: {{ $v | quote }}
{{- end }}
- name: HOME
  value: /tmp
- name: HF_HOME
  value: /tmp/hf
- name: HF_HUB_OFFLINE
  value: "1"
{{- range $k, $v := $root.Values.extraEnv }}
- name: {{ $k }}
  value: {{ $v | quote }}
{{- end }}
- name: RAGSTREAM_KAFKA__TOPIC_PREFIX
  value: {{ $root.Values.kafka.topicPrefix | quote }}
{{- range $var, $key := $root.Values.secrets.common }}
- name: {{ $var }}
  valueFrom:
    secretKeyRef:
      name: {{ $root.Values.secrets.name }}
      key: {{ $key }}
{{- end }}
{{- range $var, $key := $root.Values.secrets.optional }}
- name: {{ $var }}
  valueFrom:
    secretKeyRef:
      name: {{ $root.Values.secrets.name }}
      key: {{ $key }}
      optional: true
{{- end }}
{{- if .gatewaySecrets }}
{{- range $var, $key := $root.Values.secrets.gateway }}
- name: {{ $var }}
  valueFrom:
    secretKeyRef:
      name: {{ $root.Values.secrets.name }}
      key: {{ $key }}
      optional: true
{{- end }}
{{- end }}
{{- end -}}

{{/* The pod-level parts every ragstream pod shares. */}}
{{- define "ragstream.podCommon" -}}
serviceAccountName: {{ include "ragstream.serviceAccountName" . }}
automountServiceAccountToken: false
enableServiceLinks: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "ragstream.scratchVolume" -}}
- name: scratch
  emptyDir:
    sizeLimit: {{ .Values.scratch.sizeLimit }}
{{- end -}}

{{- define "ragstream.scratchMount" -}}
- name: scratch
  mountPath: /tmp
{{- end -}}

{{/* NetworkPolicy egress peers. */}}
{{- define "ragstream.peer" -}}
{{- $ns := .ns | default .root.Release.Namespace -}}
- namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: {{ $ns }}
  podSelector:
    matchLabels:
      {{- toYaml .pods | nindent 6 }}
{{- end -}}

{{- define "ragstream.egressBase" -}}
# DNS
- to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: kube-system
      podSelector:
        matchLabels:
          k8s-app: kube-dns
  ports:
    - {protocol: UDP, port: 53}
    - {protocol: TCP, port: 53}
# Kafka
- to:
    {{- include "ragstream.peer" (dict "root" . "ns" .Values.kafka.namespace "pods" .Values.kafka.podSelector) | nindent 4 }}
  ports:
    - {protocol: TCP, port: {{ .Values.kafka.port }}}
# OTLP collector
- to:
    {{- include "ragstream.peer" (dict "root" . "ns" .Values.otlp.namespace "pods" .Values.otlp.podSelector) | nindent 4 }}
  ports:
    {{- range .Values.otlp.ports }}
    - {protocol: TCP, port: {{ . }}}
    {{- end }}
{{- end -}}

{{- define "ragstream.egressWeaviate" -}}
- to:
    {{- include "ragstream.peer" (dict "root" . "ns" .Values.weaviate.namespace "pods" .Values.weaviate.podSelector) | nindent 4 }}
  ports:
    {{- range .Values.weaviate.ports }}
    - {protocol: TCP, port: {{ . }}}
    {{- end }}
{{- end -}}

{{- define "ragstream.egressLLM" -}}
- to:
    {{- include "ragstream.peer" (dict "root" . "ns" .Values.llm.namespace "pods" .Values.llm.podSelector) | nindent 4 }}
  ports:
    - {protocol: TCP, port: {{ .Values.llm.port }}}
{{- end -}}

{{/* Kafka client security from kafka.security: protocol, SASL credentials from the KafkaUser's Secret, the
     cluster CA and (SSL) the client certificate as mounted files. Settings refuse to start without them. */}}
{{- define "ragstream.kafkaMTLS" -}}
{{- if and (eq .Values.kafka.security.protocol "SSL") .Values.kafka.security.userSecret }}true{{ end -}}
{{- end -}}

{{- define "ragstream.kafkaSecurityEnv" -}}
{{- $s := .Values.kafka.security }}
- name: RAGSTREAM_KAFKA__SECURITY_PROTOCOL
  value: {{ $s.protocol | quote }}
{{- if hasPrefix "SASL_" $s.protocol }}
{{- if not $s.userSecret }}{{ fail "kafka.security.userSecret is required for SASL_* (the KafkaUser's Secret)" }}{{ end }}
- name: RAGSTREAM_KAFKA__SASL_MECHANISM
  value: {{ $s.mechanism | quote }}
- name: RAGSTREAM_KAFKA__SASL_USERNAME
  value: {{ $s.username | default $s.userSecret | quote }}
- name: RAGSTREAM_KAFKA__SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $s.userSecret }}
      key: password
{{- end }}
{{- if $s.caSecret }}
- name: RAGSTREAM_KAFKA__SSL_CAFILE
  value: /etc/ragstream/kafka/ca/ca.crt
{{- end }}
{{- if include "ragstream.kafkaMTLS" . }}
- name: RAGSTREAM_KAFKA__SSL_CERTFILE
  value: /etc/ragstream/kafka/user/user.crt
- name: RAGSTREAM_KAFKA__SSL_KEYFILE
  value: /etc/ragstream/kafka/user/user.key
{{- end }}
{{- end -}}

{{- define "ragstream.kafkaVolumes" -}}
{{- $s := .Values.kafka.security }}
{{- if $s.caSecret }}
- name: kafka-ca
  secret:
    secretName: {{ $s.caSecret }}
    items: [{key: {{ $s.caKey }}, path: ca.crt}]
{{- end }}
{{- if include "ragstream.kafkaMTLS" . }}
- name: kafka-user
  secret:
    secretName: {{ $s.userSecret }}
    items: [{key: user.crt, path: user.crt}, {key: user.key, path: user.key}]
    defaultMode: 288  # 0440: the pod's fsGroup reads the key, nobody else
{{- end }}
{{- end -}}

{{- define "ragstream.kafkaMounts" -}}
{{- if .Values.kafka.security.caSecret }}
- name: kafka-ca
  mountPath: /etc/ragstream/kafka/ca
  readOnly: true
{{- end }}
{{- if include "ragstream.kafkaMTLS" . }}
- name: kafka-user
  mountPath: /etc/ragstream/kafka/user
  readOnly: true
{{- end }}
{{- end -}}

{{/* KEDA's Kafka scaler reads lag with the same credentials (username from the worker's own env). */}}
{{- define "ragstream.kafkaTriggerAuthName" -}}
{{- printf "%s-kafka" (include "ragstream.fullname" .) -}}
{{- end -}}
