module kube-eagle.io/groundtruth

go 1.19
