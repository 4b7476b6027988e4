module healing-guard-operator/cluster/flux/git-server

go 1.26
