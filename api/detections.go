package api

// Built-in detections. Their IDs are the detection_id of the alerts they
// raise and the names operators patch them by in rule files; the scenarios of
// `harrier simulate`, the tests and the documentation name them too, so they
// are constants here, with the metadata that stays the same wherever the
// detection is shown. What triggers each one (its CEL condition or Go
// detector), its description and remediation live with the logic in
// analytics/rules/builtin.yaml; a test there checks that the two lists agree.

// DetectionID identifies a detection: the detection_id of its alerts.
type DetectionID string

const (
	// Node detections (events from the sensor).
	DetectionWebShell            DetectionID = "web-shell"
	DetectionNetworkScan         DetectionID = "network-scan"
	DetectionSATokenAccess       DetectionID = "sa-token-access"
	DetectionK8sAPIFromContainer DetectionID = "k8s-api-from-container"
	DetectionCloudMetadata       DetectionID = "cloud-metadata"
	DetectionSensitiveFiles      DetectionID = "sensitive-files"
	DetectionSecretRecon         DetectionID = "secret-recon"
	DetectionCPUOptimization     DetectionID = "cpu-optimization"
	DetectionLDPreload           DetectionID = "ld-preload"
	DetectionMinerDownload       DetectionID = "miner-download"
	DetectionDriftBinary         DetectionID = "drift-binary"
	DetectionMining              DetectionID = "mining"
	DetectionDownloadExec        DetectionID = "download-exec"
	DetectionReverseShell        DetectionID = "reverse-shell"
	DetectionBase64Exec          DetectionID = "base64-exec"
	DetectionUserAdded           DetectionID = "user-added"
	DetectionHistoryCleared      DetectionID = "history-cleared"
	DetectionNewNamespace        DetectionID = "new-namespace"
	DetectionKubeletKubeconfig   DetectionID = "kubelet-kubeconfig"
	DetectionSSHKeys             DetectionID = "ssh-keys"
	DetectionAttackTool          DetectionID = "attack-tool"
	DetectionFileless            DetectionID = "fileless"
	DetectionKernelModule        DetectionID = "kernel-module"
	DetectionPtraceInjection     DetectionID = "ptrace-injection"
	DetectionSensorTamper        DetectionID = "sensor-tamper"
	DetectionIOCDomain           DetectionID = "ioc-domain"
	DetectionDBSpawnsShell       DetectionID = "db-spawns-shell"
	DetectionTestAlert           DetectionID = "test-alert"
	DetectionAnomalousProcess    DetectionID = "anomalous-process"
	DetectionAnomalousEgress     DetectionID = "anomalous-egress"
	DetectionSuspectNohup        DetectionID = "suspect-nohup"
	DetectionPasswordChangeCrypt DetectionID = "password-change-crypt"
	DetectionPortForwarding      DetectionID = "port-forwarding"
	DetectionSecurityProcessKill DetectionID = "security-process-kill"
	DetectionTimestomp           DetectionID = "timestomp"
	DetectionFirewallDisabled    DetectionID = "firewall-disabled"
	DetectionUpdateTimerDisabled DetectionID = "update-timer-disabled"
	DetectionImageBuild          DetectionID = "image-build"
	DetectionContainerSSH        DetectionID = "container-ssh"
	DetectionPrivilegedRunning   DetectionID = "privileged-container-running"
	DetectionPrivilegedExec      DetectionID = "privileged-exec"
	DetectionRenamedTool         DetectionID = "renamed-tool"
	DetectionDDoSToolkit         DetectionID = "ddos-toolkit"
	DetectionBackdoorArtifact    DetectionID = "backdoor-artifact"
	DetectionCalderaAgent        DetectionID = "caldera-agent"
	DetectionSocksProxy          DetectionID = "socks-proxy"
	DetectionDNSOverHTTPS        DetectionID = "dns-over-https"
	DetectionK8sDashboard        DetectionID = "k8s-dashboard-from-container"
	DetectionExploitAttempt      DetectionID = "exploit-attempt"
	DetectionSuspectDownload     DetectionID = "suspect-download"
	DetectionBase64Pipe          DetectionID = "base64-pipe"
	DetectionCommonBot           DetectionID = "common-bot"
	DetectionReconBurst          DetectionID = "recon-burst"
	// Kubernetes control plane (audit events from the API server).
	DetectionPrivilegedContainer DetectionID = "privileged-container"
	DetectionSensitiveMount      DetectionID = "sensitive-mount"
	DetectionExposedDashboard    DetectionID = "exposed-dashboard"
	DetectionExposedService      DetectionID = "exposed-service"
	DetectionHighPrivRole        DetectionID = "high-priv-role"
	DetectionClusterAdminBinding DetectionID = "cluster-admin-binding"
	DetectionKubeSystemContainer DetectionID = "kube-system-container"
	DetectionEventsDeleted       DetectionID = "events-deleted"
	DetectionAdmissionWebhook    DetectionID = "admission-webhook"
	DetectionCoreDNSModified     DetectionID = "coredns-modified"
	DetectionSASuspiciousOp      DetectionID = "sa-suspicious-op"
	DetectionSAAnomalousOp       DetectionID = "sa-anomalous-op"
	DetectionPentestTool         DetectionID = "pentest-tool"
	DetectionMiningImage         DetectionID = "mining-image"
	DetectionExecIntoPod         DetectionID = "exec-into-pod"
	DetectionExecIntoSystemPod   DetectionID = "exec-into-system-pod"
	DetectionAnonymousAccess     DetectionID = "anonymous-access"
	DetectionAPIFromProxy        DetectionID = "api-from-proxy"
	DetectionPostgresTrust       DetectionID = "exposed-postgres-trust"
	DetectionPostgresBroadRange  DetectionID = "exposed-postgres-broad-range"
	// Learned per-actor behaviour on the control plane (analytics.baseline).
	DetectionAnomalousPodDeployment DetectionID = "anomalous-pod-deployment"
	DetectionAnomalousSecretAccess  DetectionID = "anomalous-secret-access"
	DetectionSAPermissionAnomaly    DetectionID = "sa-permission-anomaly"
	// Kubernetes admission (the agent's admission guard, kube/admission).
	DetectionAdmissionViolation DetectionID = "admission-violation"
)

// Detection is a built-in detection's metadata: its title (the alert's name),
// default severity (operators may patch it) and MITRE ATT&CK techniques.
type Detection struct {
	ID       DetectionID
	Name     string
	Severity Severity
	Mitre    []*Mitre
}

// IOCTestDomain is always on the threat list, so operators (and `harrier
// simulate`) can check the ioc-domain path end to end. .invalid never
// resolves on the internet (RFC 2606).
const IOCTestDomain = "ioc-test.harrier.invalid"

// Detections returns the built-in detections in the order the rule file
// defines them. Each call builds a new list, so callers may keep and change it.
func Detections() []Detection {
	return []Detection{
		{ID: DetectionWebShell, Name: "Possible web shell activity detected", Severity: Severity_SEVERITY_HIGH, Mitre: []*Mitre{
			{Tactic: "Persistence", TechniqueId: "T1505.003", Technique: "Server Software Component: Web Shell"},
			{Tactic: "Execution", TechniqueId: "T1059.004", Technique: "Command and Scripting Interpreter: Unix Shell"},
		}},
		{ID: DetectionNetworkScan, Name: "Network scanning tool detected", Severity: Severity_SEVERITY_HIGH, Mitre: []*Mitre{
			{Tactic: "Discovery", TechniqueId: "T1046", Technique: "Network Service Discovery"},
		}},
		{ID: DetectionSATokenAccess, Name: "Suspicious access to workload identity token or service account token detected", Severity: Severity_SEVERITY_HIGH, Mitre: []*Mitre{
			{Tactic: "Credential Access", TechniqueId: "T1528", Technique: "Steal Application Access Token"},
		}},
		{ID: DetectionK8sAPIFromContainer, Name: "Suspicious Kubernetes API request from a container", Severity: Severity_SEVERITY_HIGH, Mitre: []*Mitre{
			{Tactic: "Discovery", TechniqueId: "T1613", Technique: "Container and Resource Discovery"},
			{Tactic: "Lateral Movement", TechniqueId: "T1550.001", Technique: "Use Alternate Authentication Material: Application Access Token"},
		}},
		{ID: DetectionCloudMetadata, Name: "Access to cloud metadata service detected", Severity: Severity_SEVERITY_HIGH, Mitre: []*Mitre{
			{Tactic: "Credential Access", TechniqueId: "T1552.005", Technique: "Unsecured Credentials: Cloud Instance Metadata API"},
		}},
		{ID: DetectionSensitiveFiles, Name: "Sensitive files access detected", Severity: Severity_SEVERITY_HIGH, Mitre: []*Mitre{
			{Tactic: "Credential Access", TechniqueId: "T1552.001", Technique: "Unsecured Credentials: Credentials In Files"},
		}},
		{ID: DetectionSecretRecon, Name: "Possible secret reconnaissance detected", Severity: Severity_SEVERITY_MEDIUM, Mitre: []*Mitre{
			{Tactic: "Credential Access", TechniqueId: "T1552.001", Technique: "Unsecured Credentials: Credentials In Files"},
			{Tactic: "Discovery", TechniqueId: "T1083", Technique: "File and Directory Discovery"},
		}},
		{ID: DetectionCPUOptimization, Name: "Kubernetes CPU optimization detected", Severity: Severity_SEVERITY_HIGH, Mitre: []*Mitre{
			{Tactic: "Impact", TechniqueId: "T1496", Technique: "Resource Hijacking"},
		}},
		{ID: DetectionLDPreload, Name: "Command within a container accessed ld.so.preload", Severity: Severity_SEVERITY_HIGH, Mitre: []*Mitre{
			{Tactic: "Defense Evasion", TechniqueId: "T1574.006", Technique: "Hijack Execution Flow: Dynamic Linker Hijacking"},
			{Tactic: "Persistence", TechniqueId: "T1574.006", Technique: "Hijack Execution Flow: Dynamic Linker Hijacking"},
		}},
		{ID: DetectionMinerDownload, Name: "Possible crypto-miner download detected", Severity: Severity_SEVERITY_HIGH, Mitre: []*Mitre{
			{Tactic: "Command and Control", TechniqueId: "T1105", Technique: "Ingress Tool Transfer"},
		}},
		{ID: DetectionDriftBinary, Name: "A drift binary detected executing in the container", Severity: Severity_SEVERITY_HIGH, Mitre: []*Mitre{
			{Tactic: "Execution", TechniqueId: "T1059", Technique: "Command and Scripting Interpreter"},
			{Tactic: "Defense Evasion", TechniqueId: "T1036", Technique: "Masquerading"},
		}},
		{ID: DetectionMining, Name: "Digital currency mining related behavior detected", Severity: Severity_SEVERITY_HIGH, Mitre: []*Mitre{
			{Tactic: "Impact", TechniqueId: "T1496", Technique: "Resource Hijacking"},
		}},
		{ID: DetectionDownloadExec, Name: "Download and run combination detected", Severity: Severity_SEVERITY_HIGH, Mitre: []*Mitre{
			{Tactic: "Command and Control", TechniqueId: "T1105", Technique: "Ingress Tool Transfer"},
			{Tactic: "Execution", TechniqueId: "T1059.004", Technique: "Command and Scripting Interpreter: Unix Shell"},
		}},
		{ID: DetectionReverseShell, Name: "Possible reverse shell detected", Severity: Severity_SEVERITY_HIGH, Mitre: []*Mitre{
			{Tactic: "Execution", TechniqueId: "T1059.004", Technique: "Command and Scripting Interpreter: Unix Shell"},
			{Tactic: "Command and Control", TechniqueId: "T1095", Technique: "Non-Application Layer Protocol"},
		}},
		{ID: DetectionBase64Exec, Name: "Base64-encoded payload executed", Severity: Severity_SEVERITY_HIGH, Mitre: []*Mitre{
			{Tactic: "Execution", TechniqueId: "T1059.004", Technique: "Command and Scripting Interpreter: Unix Shell"},
			{Tactic: "Defense Evasion", TechniqueId: "T1140", Technique: "Deobfuscate/Decode Files or Information"},
		}},
		{ID: DetectionUserAdded, Name: "Suspicious user account operation", Severity: Severity_SEVERITY_HIGH, Mitre: []*Mitre{
			{Tactic: "Persistence", TechniqueId: "T1136.001", Technique: "Create Account: Local Account"},
		}},
		{ID: DetectionHistoryCleared, Name: "History file cleared or system log removed", Severity: Severity_SEVERITY_MEDIUM, Mitre: []*Mitre{
			{Tactic: "Defense Evasion", TechniqueId: "T1070.003", Technique: "Indicator Removal: Clear Command History"},
			{Tactic: "Defense Evasion", TechniqueId: "T1070.002", Technique: "Indicator Removal: Clear Linux or Mac System Logs"},
		}},
		{ID: DetectionNewNamespace, Name: "New Linux namespace created from a container", Severity: Severity_SEVERITY_HIGH, Mitre: []*Mitre{
			{Tactic: "Privilege Escalation", TechniqueId: "T1611", Technique: "Escape to Host"},
		}},
		{ID: DetectionKubeletKubeconfig, Name: "Access to kubelet kubeconfig detected", Severity: Severity_SEVERITY_HIGH, Mitre: []*Mitre{
			{Tactic: "Credential Access", TechniqueId: "T1552.001", Technique: "Unsecured Credentials: Credentials In Files"},
		}},
		{ID: DetectionSSHKeys, Name: "SSH authorized keys modified", Severity: Severity_SEVERITY_MEDIUM, Mitre: []*Mitre{
			{Tactic: "Persistence", TechniqueId: "T1098.004", Technique: "Account Manipulation: SSH Authorized Keys"},
		}},
		{ID: DetectionAttackTool, Name: "Known Linux attack or credential-access tool", Severity: Severity_SEVERITY_HIGH, Mitre: []*Mitre{
			{Tactic: "Execution", TechniqueId: "T1059", Technique: "Command and Scripting Interpreter"},
			{Tactic: "Credential Access", TechniqueId: "T1110", Technique: "Brute Force"},
		}},
		{ID: DetectionFileless, Name: "Fileless execution detected", Severity: Severity_SEVERITY_HIGH, Mitre: []*Mitre{
			{Tactic: "Defense Evasion", TechniqueId: "T1620", Technique: "Reflective Code Loading"},
		}},
		{ID: DetectionKernelModule, Name: "Kernel module load from a container", Severity: Severity_SEVERITY_HIGH, Mitre: []*Mitre{
			{Tactic: "Persistence", TechniqueId: "T1547.006", Technique: "Boot or Logon Autostart Execution: Kernel Modules and Extensions"},
			{Tactic: "Privilege Escalation", TechniqueId: "T1611", Technique: "Escape to Host"},
		}},
		{ID: DetectionPtraceInjection, Name: "Process injection via ptrace", Severity: Severity_SEVERITY_HIGH, Mitre: []*Mitre{
			{Tactic: "Defense Evasion", TechniqueId: "T1055.008", Technique: "Process Injection: Ptrace System Calls"},
			{Tactic: "Privilege Escalation", TechniqueId: "T1055.008", Technique: "Process Injection: Ptrace System Calls"},
		}},
		{ID: DetectionSensorTamper, Name: "Security sensor tampering", Severity: Severity_SEVERITY_HIGH, Mitre: []*Mitre{
			{Tactic: "Defense Evasion", TechniqueId: "T1562.001", Technique: "Impair Defenses: Disable or Modify Tools"},
		}},
		{ID: DetectionIOCDomain, Name: "Communication with a domain or IP on the threat list", Severity: Severity_SEVERITY_HIGH, Mitre: []*Mitre{
			{Tactic: "Command and Control", TechniqueId: "T1071.004", Technique: "Application Layer Protocol: DNS"},
		}},
		{ID: DetectionDBSpawnsShell, Name: "Process started by a database process", Severity: Severity_SEVERITY_HIGH, Mitre: []*Mitre{
			{Tactic: "Execution", TechniqueId: "T1059.004", Technique: "Command and Scripting Interpreter: Unix Shell"},
		}},
		{ID: DetectionTestAlert, Name: "Harrier test alert", Severity: Severity_SEVERITY_INFO},
		{ID: DetectionAnomalousProcess, Name: "Anomalous process execution", Severity: Severity_SEVERITY_MEDIUM, Mitre: []*Mitre{
			{Tactic: "Execution", TechniqueId: "T1059", Technique: "Command and Scripting Interpreter"},
		}},
		{ID: DetectionAnomalousEgress, Name: "Anomalous outbound connection", Severity: Severity_SEVERITY_MEDIUM, Mitre: []*Mitre{
			{Tactic: "Command and Control", TechniqueId: "T1071", Technique: "Application Layer Protocol"},
		}},
		{ID: DetectionSuspectNohup, Name: "Suspicious use of nohup detected", Severity: Severity_SEVERITY_MEDIUM, Mitre: []*Mitre{
			{Tactic: "Defense Evasion", TechniqueId: "T1564.001", Technique: "Hide Artifacts: Hidden Files and Directories"},
			{Tactic: "Execution", TechniqueId: "T1059.004", Technique: "Command and Scripting Interpreter: Unix Shell"},
		}},
		{ID: DetectionPasswordChangeCrypt, Name: "Possible password change using crypt-method detected", Severity: Severity_SEVERITY_MEDIUM, Mitre: []*Mitre{
			{Tactic: "Persistence", TechniqueId: "T1098", Technique: "Account Manipulation"},
		}},
		{ID: DetectionPortForwarding, Name: "Potential port forwarding or tunnel detected", Severity: Severity_SEVERITY_MEDIUM, Mitre: []*Mitre{
			{Tactic: "Command and Control", TechniqueId: "T1572", Technique: "Protocol Tunneling"},
			{Tactic: "Command and Control", TechniqueId: "T1090", Technique: "Proxy"},
		}},
		{ID: DetectionSecurityProcessKill, Name: "Security-related process termination detected", Severity: Severity_SEVERITY_MEDIUM, Mitre: []*Mitre{
			{Tactic: "Defense Evasion", TechniqueId: "T1562.001", Technique: "Impair Defenses: Disable or Modify Tools"},
		}},
		{ID: DetectionTimestomp, Name: "Suspicious file timestamp modification", Severity: Severity_SEVERITY_LOW, Mitre: []*Mitre{
			{Tactic: "Defense Evasion", TechniqueId: "T1070.006", Technique: "Indicator Removal: Timestomp"},
		}},
		{ID: DetectionFirewallDisabled, Name: "Manipulation of host firewall detected", Severity: Severity_SEVERITY_MEDIUM, Mitre: []*Mitre{
			{Tactic: "Defense Evasion", TechniqueId: "T1562.004", Technique: "Impair Defenses: Disable or Modify System Firewall"},
		}},
		{ID: DetectionUpdateTimerDisabled, Name: "Automatic security updates stopped", Severity: Severity_SEVERITY_LOW, Mitre: []*Mitre{
			{Tactic: "Defense Evasion", TechniqueId: "T1562.001", Technique: "Impair Defenses: Disable or Modify Tools"},
		}},
		{ID: DetectionImageBuild, Name: "Container image build on the node detected", Severity: Severity_SEVERITY_INFO, Mitre: []*Mitre{
			{Tactic: "Defense Evasion", TechniqueId: "T1612", Technique: "Build Image on Host"},
		}},
		{ID: DetectionContainerSSH, Name: "SSH server is running inside a container", Severity: Severity_SEVERITY_LOW, Mitre: []*Mitre{
			{Tactic: "Lateral Movement", TechniqueId: "T1021.004", Technique: "Remote Services: SSH"},
			{Tactic: "Persistence", TechniqueId: "T1133", Technique: "External Remote Services"},
		}},
		{ID: DetectionPrivilegedRunning, Name: "Container running in privileged mode", Severity: Severity_SEVERITY_INFO, Mitre: []*Mitre{
			{Tactic: "Privilege Escalation", TechniqueId: "T1611", Technique: "Escape to Host"},
			{Tactic: "Execution", TechniqueId: "T1610", Technique: "Deploy Container"},
		}},
		{ID: DetectionPrivilegedExec, Name: "Command within a container running with high privileges", Severity: Severity_SEVERITY_INFO, Mitre: []*Mitre{
			{Tactic: "Privilege Escalation", TechniqueId: "T1611", Technique: "Escape to Host"},
		}},
		{ID: DetectionRenamedTool, Name: "Known attack tool running under another name", Severity: Severity_SEVERITY_HIGH, Mitre: []*Mitre{
			{Tactic: "Defense Evasion", TechniqueId: "T1036.005", Technique: "Masquerading: Match Legitimate Name or Location"},
		}},
		{ID: DetectionDDoSToolkit, Name: "Indicators associated with a DDoS toolkit detected", Severity: Severity_SEVERITY_MEDIUM, Mitre: []*Mitre{
			{Tactic: "Impact", TechniqueId: "T1498", Technique: "Network Denial of Service"},
			{Tactic: "Persistence", TechniqueId: "T1053.003", Technique: "Scheduled Task/Job: Cron"},
		}},
		{ID: DetectionBackdoorArtifact, Name: "Possible backdoor detected", Severity: Severity_SEVERITY_HIGH, Mitre: []*Mitre{
			{Tactic: "Privilege Escalation", TechniqueId: "T1548.001", Technique: "Abuse Elevation Control Mechanism: Setuid and Setgid"},
			{Tactic: "Persistence", TechniqueId: "T1556.003", Technique: "Modify Authentication Process: Pluggable Authentication Modules"},
			{Tactic: "Defense Evasion", TechniqueId: "T1564.001", Technique: "Hide Artifacts: Hidden Files and Directories"},
		}},
		{ID: DetectionCalderaAgent, Name: "MITRE Caldera agent detected", Severity: Severity_SEVERITY_MEDIUM, Mitre: []*Mitre{
			{Tactic: "Command and Control", TechniqueId: "T1105", Technique: "Ingress Tool Transfer"},
			{Tactic: "Command and Control", TechniqueId: "T1071.001", Technique: "Application Layer Protocol: Web Protocols"},
		}},
		{ID: DetectionSocksProxy, Name: "Connection through a SOCKS proxy detected", Severity: Severity_SEVERITY_MEDIUM, Mitre: []*Mitre{
			{Tactic: "Command and Control", TechniqueId: "T1090", Technique: "Proxy"},
		}},
		{ID: DetectionDNSOverHTTPS, Name: "Suspicious use of DNS over HTTPS", Severity: Severity_SEVERITY_MEDIUM, Mitre: []*Mitre{
			{Tactic: "Command and Control", TechniqueId: "T1572", Technique: "Protocol Tunneling"},
			{Tactic: "Command and Control", TechniqueId: "T1071.004", Technique: "Application Layer Protocol: DNS"},
		}},
		{ID: DetectionK8sDashboard, Name: "Suspicious request to the Kubernetes dashboard from a container", Severity: Severity_SEVERITY_MEDIUM, Mitre: []*Mitre{
			{Tactic: "Discovery", TechniqueId: "T1613", Technique: "Container and Resource Discovery"},
			{Tactic: "Lateral Movement", TechniqueId: "T1021", Technique: "Remote Services"},
		}},
		{ID: DetectionExploitAttempt, Name: "Possible command line exploitation attempt", Severity: Severity_SEVERITY_MEDIUM, Mitre: []*Mitre{
			{Tactic: "Initial Access", TechniqueId: "T1190", Technique: "Exploit Public-Facing Application"},
		}},
		{ID: DetectionSuspectDownload, Name: "Detected suspicious file download", Severity: Severity_SEVERITY_LOW, Mitre: []*Mitre{
			{Tactic: "Command and Control", TechniqueId: "T1105", Technique: "Ingress Tool Transfer"},
		}},
		{ID: DetectionBase64Pipe, Name: "Decoded stream piped into a shell", Severity: Severity_SEVERITY_HIGH, Mitre: []*Mitre{
			{Tactic: "Execution", TechniqueId: "T1059.004", Technique: "Command and Scripting Interpreter: Unix Shell"},
			{Tactic: "Defense Evasion", TechniqueId: "T1140", Technique: "Deobfuscate/Decode Files or Information"},
		}},
		{ID: DetectionCommonBot, Name: "Behavior similar to common Linux bots detected", Severity: Severity_SEVERITY_MEDIUM, Mitre: []*Mitre{
			{Tactic: "Command and Control", TechniqueId: "T1071", Technique: "Application Layer Protocol"},
			{Tactic: "Execution", TechniqueId: "T1059.004", Technique: "Command and Scripting Interpreter: Unix Shell"},
			{Tactic: "Command and Control", TechniqueId: "T1105", Technique: "Ingress Tool Transfer"},
		}},
		{ID: DetectionReconBurst, Name: "Burst of reconnaissance commands", Severity: Severity_SEVERITY_LOW, Mitre: []*Mitre{
			{Tactic: "Discovery", TechniqueId: "T1082", Technique: "System Information Discovery"},
			{Tactic: "Discovery", TechniqueId: "T1033", Technique: "System Owner/User Discovery"},
			{Tactic: "Discovery", TechniqueId: "T1016", Technique: "System Network Configuration Discovery"},
		}},
		{ID: DetectionPrivilegedContainer, Name: "Privileged container detected", Severity: Severity_SEVERITY_HIGH, Mitre: []*Mitre{
			{Tactic: "Privilege Escalation", TechniqueId: "T1611", Technique: "Escape to Host"},
		}},
		{ID: DetectionSensitiveMount, Name: "Container with a sensitive volume mount detected", Severity: Severity_SEVERITY_HIGH, Mitre: []*Mitre{
			{Tactic: "Privilege Escalation", TechniqueId: "T1611", Technique: "Escape to Host"},
		}},
		{ID: DetectionExposedDashboard, Name: "Exposed Kubernetes dashboard detected", Severity: Severity_SEVERITY_HIGH, Mitre: []*Mitre{
			{Tactic: "Initial Access", TechniqueId: "T1133", Technique: "External Remote Services"},
		}},
		{ID: DetectionExposedService, Name: "Exposed sensitive service detected", Severity: Severity_SEVERITY_MEDIUM, Mitre: []*Mitre{
			{Tactic: "Initial Access", TechniqueId: "T1133", Technique: "External Remote Services"},
		}},
		{ID: DetectionHighPrivRole, Name: "New high privileges role detected", Severity: Severity_SEVERITY_MEDIUM, Mitre: []*Mitre{
			{Tactic: "Persistence", TechniqueId: "T1098.006", Technique: "Account Manipulation: Additional Container Cluster Roles"},
		}},
		{ID: DetectionClusterAdminBinding, Name: "Role binding to the cluster-admin role detected", Severity: Severity_SEVERITY_HIGH, Mitre: []*Mitre{
			{Tactic: "Persistence", TechniqueId: "T1098.006", Technique: "Account Manipulation: Additional Container Cluster Roles"},
		}},
		{ID: DetectionKubeSystemContainer, Name: "New container in the kube-system namespace detected", Severity: Severity_SEVERITY_MEDIUM, Mitre: []*Mitre{
			{Tactic: "Persistence", TechniqueId: "T1543", Technique: "Create or Modify System Process"},
		}},
		{ID: DetectionEventsDeleted, Name: "Kubernetes events deleted", Severity: Severity_SEVERITY_MEDIUM, Mitre: []*Mitre{
			{Tactic: "Defense Evasion", TechniqueId: "T1070", Technique: "Indicator Removal"},
		}},
		{ID: DetectionAdmissionWebhook, Name: "Creation of admission webhook configuration detected", Severity: Severity_SEVERITY_MEDIUM, Mitre: []*Mitre{
			{Tactic: "Persistence", TechniqueId: "T1546", Technique: "Event Triggered Execution"},
			{Tactic: "Credential Access", TechniqueId: "T1557", Technique: "Adversary-in-the-Middle"},
		}},
		{ID: DetectionCoreDNSModified, Name: "CoreDNS modification detected", Severity: Severity_SEVERITY_MEDIUM, Mitre: []*Mitre{
			{Tactic: "Lateral Movement", TechniqueId: "T1557", Technique: "Adversary-in-the-Middle"},
		}},
		{ID: DetectionSASuspiciousOp, Name: "Suspicious Kubernetes service account operation detected", Severity: Severity_SEVERITY_MEDIUM, Mitre: []*Mitre{
			{Tactic: "Discovery", TechniqueId: "T1613", Technique: "Container and Resource Discovery"},
			{Tactic: "Discovery", TechniqueId: "T1069", Technique: "Permission Groups Discovery"},
		}},
		{ID: DetectionSAAnomalousOp, Name: "Anomalous Kubernetes service account operation detected", Severity: Severity_SEVERITY_MEDIUM, Mitre: []*Mitre{
			{Tactic: "Lateral Movement", TechniqueId: "T1550.001", Technique: "Use Alternate Authentication Material: Application Access Token"},
		}},
		{ID: DetectionPentestTool, Name: "Kubernetes penetration testing tool detected", Severity: Severity_SEVERITY_HIGH, Mitre: []*Mitre{
			{Tactic: "Execution", TechniqueId: "T1613", Technique: "Container and Resource Discovery"},
		}},
		{ID: DetectionMiningImage, Name: "Digital currency mining container detected", Severity: Severity_SEVERITY_HIGH, Mitre: []*Mitre{
			{Tactic: "Impact", TechniqueId: "T1496", Technique: "Resource Hijacking"},
			{Tactic: "Execution", TechniqueId: "T1610", Technique: "Deploy Container"},
		}},
		{ID: DetectionExecIntoPod, Name: "Exec into a pod detected", Severity: Severity_SEVERITY_INFO, Mitre: []*Mitre{
			{Tactic: "Execution", TechniqueId: "T1609", Technique: "Container Administration Command"},
		}},
		{ID: DetectionExecIntoSystemPod, Name: "Exec into a kube-system pod detected", Severity: Severity_SEVERITY_HIGH, Mitre: []*Mitre{
			{Tactic: "Execution", TechniqueId: "T1609", Technique: "Container Administration Command"},
		}},
		{ID: DetectionAnonymousAccess, Name: "Anonymous request allowed by the API server", Severity: Severity_SEVERITY_HIGH, Mitre: []*Mitre{
			{Tactic: "Initial Access", TechniqueId: "T1078.001", Technique: "Valid Accounts: Default Accounts"},
		}},
		{ID: DetectionAPIFromProxy, Name: "Kubernetes API request from a proxy address", Severity: Severity_SEVERITY_LOW, Mitre: []*Mitre{
			{Tactic: "Command and Control", TechniqueId: "T1090.003", Technique: "Proxy: Multi-hop Proxy"},
			{Tactic: "Initial Access", TechniqueId: "T1078", Technique: "Valid Accounts"},
		}},
		{ID: DetectionPostgresTrust, Name: "Exposed Postgres service with trust authentication detected", Severity: Severity_SEVERITY_MEDIUM, Mitre: []*Mitre{
			{Tactic: "Initial Access", TechniqueId: "T1133", Technique: "External Remote Services"},
			{Tactic: "Initial Access", TechniqueId: "T1078.001", Technique: "Valid Accounts: Default Accounts"},
		}},
		{ID: DetectionPostgresBroadRange, Name: "Exposed Postgres service accepting clients from any address detected", Severity: Severity_SEVERITY_MEDIUM, Mitre: []*Mitre{
			{Tactic: "Initial Access", TechniqueId: "T1133", Technique: "External Remote Services"},
		}},
		{ID: DetectionAnomalousPodDeployment, Name: "Anomalous pod deployment detected", Severity: Severity_SEVERITY_MEDIUM, Mitre: []*Mitre{
			{Tactic: "Execution", TechniqueId: "T1610", Technique: "Deploy Container"},
		}},
		{ID: DetectionAnomalousSecretAccess, Name: "Anomalous access to Kubernetes secret detected", Severity: Severity_SEVERITY_MEDIUM, Mitre: []*Mitre{
			{Tactic: "Credential Access", TechniqueId: "T1552.007", Technique: "Unsecured Credentials: Container API"},
		}},
		{ID: DetectionSAPermissionAnomaly, Name: "Service account using sensitive permissions it never used", Severity: Severity_SEVERITY_LOW, Mitre: []*Mitre{
			{Tactic: "Discovery", TechniqueId: "T1069", Technique: "Permission Groups Discovery"},
			{Tactic: "Lateral Movement", TechniqueId: "T1550.001", Technique: "Use Alternate Authentication Material: Application Access Token"},
		}},
		// Severity is the fallback: each alert takes its failed check's, and
		// the checks that open a way to the node add T1611 Escape to Host.
		{ID: DetectionAdmissionViolation, Name: "Workload failing a security control submitted to the API server", Severity: Severity_SEVERITY_HIGH, Mitre: []*Mitre{
			{Tactic: "Execution", TechniqueId: "T1610", Technique: "Deploy Container"},
		}},
	}
}

// LookupDetection returns the built-in detection with the given ID.
func LookupDetection(id DetectionID) (Detection, bool) {
	for _, d := range Detections() {
		if d.ID == id {
			return d, true
		}
	}
	return Detection{}, false
}
