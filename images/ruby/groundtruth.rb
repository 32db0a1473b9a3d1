# groundtruth for Ruby: each round does the same unit of work 6 times in cpu_60, 3 times in
# cpu_30 and once in cpu_10, so a correct profile shows them at 60%, 30% and 10%.
#
#   ruby groundtruth.rb

def spin(n)
  x = 0
  n.times { |i| x = (x * 31 + i) & 0xffffffff }
  x
end

def cpu_60 = 6.times { spin(10_000) }
def cpu_30 = 3.times { spin(10_000) }
def cpu_10 = spin(10_000)

loop do
  cpu_60
  cpu_30
  cpu_10
end
