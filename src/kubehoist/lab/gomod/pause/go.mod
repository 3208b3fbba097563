module kubehoist.lab/pause

go 1.22
