/*
 * The test cluster's pod sandbox process: holds the pod's namespaces open,
 * reaps the zombies of processes that end up parented to it (it is PID 1 of
 * a pod that shares its PID namespace) and exits cleanly when the runtime
 * asks. Built with gcc -static, so the image needs nothing else.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>

int main(void) {
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGCHLD);
	/* Handled synchronously below: no handler can interrupt anything. */
	if (sigprocmask(SIG_BLOCK, &set, NULL) != 0) {
		perror("pause: sigprocmask");
		return 1;
	}
	for (;;) {
		int sig;
		if (sigwait(&set, &sig) != 0)
			continue;
		if (sig == SIGCHLD) {
			while (waitpid(-1, NULL, WNOHANG) > 0)
				;
			continue;
		}
		return 0; /* SIGINT or SIGTERM */
	}
}
